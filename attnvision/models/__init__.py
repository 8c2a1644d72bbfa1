"""Model families, one per file; importing a family registers its builders."""
from . import aa_resnet, coatnet, mobilenet, mobilenet_v2, resnet, sasa, van, vit  # noqa: F401
