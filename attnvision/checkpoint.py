"""Loading weights: our own checkpoints and the authors' official key layouts.

A model family that can read an official layout defines
``checkpoint_filter_fn(state_dict, model) -> state_dict`` (as timm does); a model whose
tensors depend on the input size defines ``adapt_state_dict(state_dict) -> state_dict``
to fit a checkpoint made at another size. This module reads the file, unwraps it, picks
the layout and reports what did not fit.
"""
from __future__ import annotations

import os
import re
from typing import Iterable, Mapping, NamedTuple

import torch
from torch import nn

_WRAPPER_KEYS = ("state_dict", "model", "module", "state_dict_ema", "model_ema")
_SOURCES = ("auto", "attnvision", "official")


class LoadReport(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]
    source: str  # the layout that was read: "attnvision" or "official"


def read_state_dict(path_or_state_dict) -> dict[str, torch.Tensor]:
    """A flat ``{key: tensor}`` dict from a path (safetensors or torch) or a mapping.

    Wrappers (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped and a DataParallel
    ``module.`` prefix is stripped.
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        path = os.fspath(path_or_state_dict)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"load_checkpoint: no checkpoint file at {path!r}")
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    elif isinstance(path_or_state_dict, Mapping):
        sd = path_or_state_dict
    else:
        raise TypeError(f"load_checkpoint: expected a path or a state_dict mapping, got {type(path_or_state_dict).__name__}")
    while isinstance(sd, Mapping) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
        inner = next((sd[k] for k in _WRAPPER_KEYS if isinstance(sd.get(k), Mapping)), None)
        if inner is None:
            raise ValueError(f"load_checkpoint: found no tensors in the checkpoint (top-level keys: {sorted(sd)[:10]})")
        sd = inner
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def remap_keys(state_dict: Mapping[str, torch.Tensor], rules: Iterable[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Rename keys by regular-expression rules (``re.sub`` of each rule, in order)."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out = {}
    for k, v in state_dict.items():
        for p, r in compiled:
            k = p.sub(r, k)
        out[k] = v
    return out


def _listing(keys, limit: int = 20) -> str:
    keys = list(keys)
    more = f" … and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_checkpoint(model: nn.Module, path_or_state_dict, *, source: str = "auto", strict: bool = True) -> LoadReport:
    """Load weights into ``model``.

    Args:
        source: ``"attnvision"`` (our key layout), ``"official"`` (the authors' layout,
            converted by the family's ``checkpoint_filter_fn``) or ``"auto"`` (ours when
            every key is ours, else official).
        strict: raise when keys are missing or unexpected. Shape mismatches always raise.

    Returns:
        LoadReport(missing_keys, unexpected_keys, source).
    """
    if source not in _SOURCES:
        raise ValueError(f"load_checkpoint: source must be one of {_SOURCES}, got {source!r}")
    from .models._features import FeatureListNet

    features_only = isinstance(model, FeatureListNet)
    target = model.model if features_only else model
    name = type(target).__name__
    sd = read_state_dict(path_or_state_dict)
    own = target.state_dict()
    if source == "auto":
        source = "attnvision" if all(k in own for k in sd) else "official"
    if source == "official":
        filter_fn = getattr(target, "checkpoint_filter_fn", None)
        if filter_fn is None:
            raise ValueError(f"load_checkpoint: {name} has no converter for official checkpoints; "
                             f"use source='attnvision' for a checkpoint in our layout")
        sd = filter_fn(sd, target)
    adapt = getattr(target, "adapt_state_dict", None)
    if adapt is not None:  # e.g. relative-position tables saved at another input size
        sd = adapt(sd)

    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in sd.items() if k in own and v.shape != own[k].shape]
    if mismatched:
        raise ValueError(f"load_checkpoint: {len(mismatched)} tensors of the checkpoint do not fit {name}: "
                         + _listing(mismatched))
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if features_only:  # feature extractors have no classifier, final norm or unused stages
        unexpected = [k for k in unexpected if k not in model.removed_keys]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {_listing(unexpected)}")
        raise ValueError(f"load_checkpoint: the checkpoint ({source} layout) does not match {name}; "
                         + "; ".join(parts))
    target.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return LoadReport(missing, unexpected, source)
