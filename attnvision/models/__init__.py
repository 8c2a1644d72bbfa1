"""Model families, one per file; importing a family registers its builders."""
from . import aa_resnet, coatnet, mobilenet, resnet, sasa, van, vit  # noqa: F401
