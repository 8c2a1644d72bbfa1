"""Model families, one per file; importing a family registers its builders."""
from . import mobilenet, resnet, van  # noqa: F401
