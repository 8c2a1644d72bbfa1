"""Loading weights into a model: our own checkpoints and other layouts through the family's converter.

A model family that can read an official layout defines ``checkpoint_filter_fn(state_dict, model) ->
state_dict`` (as timm does); a model whose tensors depend on the input size defines
``adapt_state_dict(state_dict) -> state_dict`` to fit a checkpoint made at another size. This module
reads the file, unwraps it, picks the layout and reports what did not fit.
"""
from __future__ import annotations

from typing import NamedTuple

from torch import nn

from ..layers._base import AttentionLayer
from .files import read_state_dict

_SOURCES = ("auto", "attnvision", "official")


class LoadReport(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]
    source: str  # the layout that was read: "attnvision" or "official"
    dropped_keys: tuple[str, ...] = ()  # classifier tensors of another shape, left at their initialisation
    fresh_keys: tuple[str, ...] = ()    # attention tensors a plain network's checkpoint lacks, left at theirs


def _listing(keys, limit: int = 20) -> str:
    keys = list(keys)
    more = f" … and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def attention_prefixes(model: nn.Module) -> list[str]:
    """Module paths (with a trailing dot) of the attention layers of ``model``, outermost only."""
    prefixes: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, AttentionLayer) and name and not any(name.startswith(p) for p in prefixes):
            prefixes.append(name + ".")
    return prefixes


def _classifier_prefix(model: nn.Module) -> str | None:
    path = getattr(model, "classifier_path", None)
    return path + "." if path else None


def load_checkpoint(model: nn.Module, path_or_state_dict, *, source: str = "auto", strict: bool = True,
                    drop_mismatched_head: bool = False, fresh_attention: bool = False) -> LoadReport:
    """Load weights into ``model``.

    Args:
        source: ``"attnvision"`` (our key layout), ``"official"`` (another layout: the authors',
            timm's or Hugging Face's, converted by the family's ``checkpoint_filter_fn``) or
            ``"auto"`` (ours when every key is ours, else official).
        strict: raise when keys are missing or unexpected. Shape mismatches always raise, but for
            the classifier under ``drop_mismatched_head``.
        drop_mismatched_head: fine-tuning to other classes: classifier tensors whose shape differs
            from the model's are dropped and keep their initialisation (as timm's ``load_pretrained``
            does when ``num_classes`` differs), and so is the whole classifier for a model built
            with ``num_classes=0``; they are listed in ``LoadReport.dropped_keys``.
        fresh_attention: initialising an attention variant from a plain network's checkpoint
            (torchvision's or timm's ``resnet50`` into ``resnet50_cbam``): when the checkpoint holds
            none of the model's attention tensors, these keep their initialisation and are listed in
            ``LoadReport.fresh_keys`` instead of ``missing_keys``. A checkpoint with only some of
            them still counts them as missing.

    Returns:
        LoadReport(missing_keys, unexpected_keys, source, dropped_keys, fresh_keys).
    """
    if source not in _SOURCES:
        raise ValueError(f"load_checkpoint: source must be one of {_SOURCES}, got {source!r}")
    # a feature extractor (``features_only=True``) holds the network as ``.model`` and lists the
    # state-dict keys it pruned (classifier, final norm, unused stages) as ``.removed_keys``
    inner = getattr(model, "model", None)
    features_only = hasattr(model, "removed_keys") and isinstance(inner, nn.Module)
    target = inner if features_only and isinstance(inner, nn.Module) else model
    removed = getattr(model, "removed_keys", ())
    name = type(target).__name__
    sd = read_state_dict(path_or_state_dict)
    own = target.state_dict()
    # a feature extractor has no classifier, final norm or unused stages: their tensors are not expected
    head = _classifier_prefix(target)

    def ignorable(key: str) -> bool:
        return features_only and (head is not None and key.startswith(head) or key in removed)

    if source == "auto":
        source = "attnvision" if all(k in own or ignorable(k) for k in sd) else "official"
    if source == "official":
        filter_fn = getattr(target, "checkpoint_filter_fn", None)
        if filter_fn is None:
            raise ValueError(f"load_checkpoint: {name} has no converter for official checkpoints; "
                             f"use source='attnvision' for a checkpoint in our layout")
        sd = filter_fn(sd, target)
    adapt = getattr(target, "adapt_state_dict", None)
    if adapt is not None:  # e.g. relative-position tables saved at another input size
        sd = adapt(sd)

    dropped: list[str] = []
    if drop_mismatched_head and head:
        dropped = [k for k in own if k.startswith(head) and k in sd and sd[k].shape != own[k].shape]
        if not any(k.startswith(head) for k in own):  # num_classes=0: the model has no classifier at all
            dropped = [k for k in sd if k.startswith(head)]
        sd = {k: v for k, v in sd.items() if k not in dropped}
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in sd.items() if k in own and v.shape != own[k].shape]
    if mismatched:
        hint = ("; to fine-tune to another number of classes, pass drop_mismatched_head=True"
                if head and any(m.startswith(head) for m in mismatched) else "")
        raise ValueError(f"load_checkpoint: {len(mismatched)} tensors of the checkpoint do not fit {name}: "
                         + _listing(mismatched) + hint)
    missing = [k for k in own if k not in sd and k not in dropped]
    fresh: list[str] = []
    if fresh_attention:
        prefixes = tuple(attention_prefixes(target))
        attention = [k for k in own if k.startswith(prefixes)] if prefixes else []
        if attention and not any(k in sd for k in attention):
            fresh = attention
            missing = [k for k in missing if k not in set(fresh)]
    unexpected = [k for k in sd if k not in own]
    if features_only:
        unexpected = [k for k in unexpected if not ignorable(k)]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {_listing(unexpected)}")
        raise ValueError(f"load_checkpoint: the checkpoint ({source} layout) does not match {name}; "
                         + "; ".join(parts))
    target.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return LoadReport(missing, unexpected, source, tuple(dropped), tuple(fresh))
