"""Model families, one per file; importing a family registers its builders."""
from . import coatnet, mobilenet, resnet  # noqa: F401
