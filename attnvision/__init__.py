"""attnvision: attention for vision — faithful, fast plug-in modules, backbones and tools."""
__version__ = "0.1.0"

from .attach import attach, detach
from .checkpoint import LoadReport, load_checkpoint, load_model
from .inference import optimize_for_inference
from .layers.create_attn import create_attn
from .profiling import Profile, profile
from .registry import create_model, list_models, register_model

__all__ = ["LoadReport", "Profile", "__version__", "attach", "create_attn", "create_detector", "create_model",
           "create_segmenter", "detach", "list_models", "load_checkpoint", "load_model",
           "optimize_for_inference", "profile", "register_model"]


def __getattr__(name: str):
    # the dense package loads torchvision's detection models: only when asked for
    if name in ("create_detector", "create_segmenter"):
        from . import dense
        return getattr(dense, name)
    raise AttributeError(f"module 'attnvision' has no attribute {name!r}")
