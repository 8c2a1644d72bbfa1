"""Model registry: ``register_model``, ``list_models`` and ``create_model`` (timm conventions).

Builders are plain functions ``builder(*, num_classes, in_chans, **kwargs) -> nn.Module``
registered by name. ``create_model`` also accepts ``torchvision:NAME`` and ``timm:NAME``
when those packages are installed. Nothing is ever downloaded: ``pretrained`` is False or
a local file.
"""
from __future__ import annotations

import fnmatch
import os
from typing import Callable

from torch import nn

from ._suggest import unknown_name_error

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_EXTERNAL = ("torchvision:", "timm:")


def register_model(fn: Callable[..., nn.Module] | None = None, *, name: str | None = None):
    """Register a builder under ``name`` (default: the function's name). Usable as a decorator."""

    def add(f):
        key = name or f.__name__
        if key in _MODELS:
            raise ValueError(f"register_model: a model named {key!r} is already registered")
        _MODELS[key] = f
        return f

    return add(fn) if fn is not None else add


def _load_families() -> None:
    from . import models  # noqa: F401  (importing the families registers them)


def is_model(name: str) -> bool:
    _load_families()
    return name in _MODELS


def list_models(pattern="*", exclude_filters=(), pretrained: bool = False) -> list[str]:
    """Sorted names of the registered models matching the fnmatch ``pattern`` (or any of a list of
    patterns) and none of ``exclude_filters`` (timm's signature). ``pretrained=True`` lists the models
    with downloadable weights: none, as attnvision ships no weights (load local files with ``pretrained=PATH``)."""
    _load_families()
    patterns = list(pattern) if isinstance(pattern, (list, tuple, set)) else [pattern]
    excludes = list(exclude_filters) if isinstance(exclude_filters, (list, tuple, set)) else [exclude_filters or ""]
    for p in patterns + excludes:
        if not isinstance(p, str):
            raise TypeError(f"list_models: patterns must be strings, got {p!r}")
    if pretrained:
        return []
    names = {n for p in patterns for n in fnmatch.filter(_MODELS, p)}
    names -= {n for p in excludes for n in fnmatch.filter(names, p)}
    return sorted(names)


def _create_external(name: str, num_classes: int, in_chans: int, **kwargs) -> nn.Module:
    lib, _, arch = name.partition(":")
    if lib == "torchvision":
        try:
            import torchvision.models as tvm
        except ImportError as e:
            raise ImportError(f"create_model: {name!r} needs torchvision installed") from e
        if in_chans != 3:
            raise ValueError(f"create_model: torchvision models take in_chans=3, got {in_chans}")
        if arch not in tvm.list_models():
            raise unknown_name_error("create_model (torchvision)", arch, tvm.list_models())
        return tvm.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    try:
        import timm
    except ImportError as e:
        raise ImportError(f"create_model: {name!r} needs timm installed (pip install timm)") from e
    if arch not in timm.list_models():
        raise unknown_name_error("create_model (timm)", arch, timm.list_models())
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


def create_model(name: str, *, num_classes: int = 1000, in_chans: int = 3, pretrained=False,
                 features_only: bool = False, out_indices=None, feature_cls: str | None = None,
                 feature_cfg: dict | None = None, output_stride: int | None = None, **model_kwargs) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`, or ``torchvision:NAME`` / ``timm:NAME``.
        num_classes: classifier outputs (0 for no classifier).
        in_chans: input image channels.
        pretrained: False, or the path of a local checkpoint (safetensors or torch file, in our
            key layout or the authors'); it is loaded with ``load_checkpoint(source="auto")``.
        features_only: return a feature extractor whose forward gives one map per stage.
        out_indices: which stages ``features_only`` returns (default: all; an int n: the last n).
        feature_cls, feature_cfg: timm's feature-extractor options; ``"list"`` / ``"getter"`` (both give
            the list of maps) and ``feature_cfg=dict(out_indices=..., feature_cls=...)``.
        output_stride: the network's total stride; only the native one (no family here dilates).
        **model_kwargs: passed to the family's builder (see API.md).
    """
    if not isinstance(name, str):
        raise TypeError(f"create_model: name must be a string, got {type(name).__name__}")
    if name.startswith(_EXTERNAL):
        if output_stride is not None:
            model_kwargs["output_stride"], output_stride = output_stride, None
        model = _create_external(name, num_classes, in_chans, **model_kwargs)
    else:
        _load_families()
        if name not in _MODELS:
            raise unknown_name_error("create_model", name, _MODELS)
        model = _MODELS[name](num_classes=num_classes, in_chans=in_chans, **model_kwargs)
    if pretrained:
        if not isinstance(pretrained, (str, os.PathLike)):
            raise TypeError(f"create_model: pretrained must be False or a local path, got {pretrained!r}")
        from .checkpoint import load_checkpoint
        load_checkpoint(model, pretrained, source="auto")
    if output_stride is not None:
        native = model.feature_info[-1]["reduction"]
        if output_stride != native:
            raise ValueError(f"create_model: {name} has no dilated variant; output_stride must be its native "
                             f"{native}, got {output_stride!r}")
    cfg = dict(feature_cfg or {})
    unknown = set(cfg) - {"out_indices", "feature_cls"}
    if unknown:
        raise ValueError(f"create_model: feature_cfg takes out_indices and feature_cls, got {sorted(unknown)}")
    out_indices = cfg.get("out_indices", out_indices)
    feature_cls = cfg.get("feature_cls", feature_cls)
    if feature_cls not in (None, "list", "getter"):
        raise ValueError(f"create_model: feature_cls must be 'list' or 'getter', got {feature_cls!r}")
    if features_only:
        from .models._features import FeatureListNet
        model = FeatureListNet(model, out_indices)
    elif out_indices is not None or feature_cls is not None:
        raise ValueError("create_model: out_indices and feature_cls are only used with features_only=True")
    return model
