"""attnvision: attention for vision — faithful, fast plug-in modules, backbones and tools.

The package is built in layers, each importing only the ones below it: ``layers`` (one mechanism a
file) → ``registry`` and ``weights`` (reading files, key maps) → ``models`` (one family a file) →
``factory`` (``create_model``) → ``attach``, ``explain``, ``profiling``, ``data``, ``dense`` → ``train``
(the training core) → ``tasks`` → ``compare`` and ``loading`` (runs, the Hub) → ``cli``.
"""
from . import tasks  # noqa: F401  (registers the built-in tasks of the training loop)
from ._version import __version__
from .attach import attach, detach
from .factory import create_model, list_models
from .inference import optimize_for_inference
from .layers.create_attn import create_attn, register_attn
from .loading import load_model, push_to_hub, save_pretrained
from .profiling import Profile, profile
from .registry import Registry, register_model
from .weights import LoadReport, load_checkpoint

__all__ = ["LoadReport", "Profile", "Registry", "__version__", "attach", "create_attn", "create_detector",
           "create_model", "create_segmenter", "detach", "list_models", "load_checkpoint", "load_model",
           "optimize_for_inference", "profile", "push_to_hub", "register_attn", "register_model", "save_pretrained"]


def __getattr__(name: str):
    # the dense package loads torchvision's detection models: only when asked for
    if name in ("create_detector", "create_segmenter"):
        import importlib

        return getattr(importlib.import_module(".dense", __name__), name)
    raise AttributeError(f"module 'attnvision' has no attribute {name!r}")
