"""Model families, one per file; importing a family registers its builders."""
from . import aa_resnet, coatnet, mobilenet, resnet, sasa, vit  # noqa: F401
