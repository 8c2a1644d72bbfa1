"""Loading weights: our own checkpoints and the authors' official key layouts.

A model family that can read an official layout defines
``checkpoint_filter_fn(state_dict, model) -> state_dict`` (as timm does); a model whose
tensors depend on the input size defines ``adapt_state_dict(state_dict) -> state_dict``
to fit a checkpoint made at another size. This module reads the file, unwraps it, picks
the layout and reports what did not fit.
"""
from __future__ import annotations

import os
import pickle
import re
import struct
import warnings
from typing import Iterable, Mapping, NamedTuple

import torch
from torch import nn

_WRAPPER_KEYS = ("state_dict", "model", "module", "state_dict_ema", "model_ema")
_SOURCES = ("auto", "attnvision", "official")


class LoadReport(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]
    source: str  # the layout that was read: "attnvision" or "official"
    dropped_keys: tuple[str, ...] = ()  # classifier tensors of another shape, left at their initialisation
    fresh_keys: tuple[str, ...] = ()    # attention tensors a plain network's checkpoint lacks, left at theirs


def torch_load(path: str, who: str, what: str = "checkpoint", hint: str = ""):
    """``torch.load(path, weights_only=True)`` whose failures are one clear ``ValueError``.

    ``weights_only`` unpickles tensors and plain containers only; a file that needs more (or is
    not a torch file at all) is refused, and the message never suggests the unsafe
    ``weights_only=False``: a pickle from an untrusted source can run any code.
    """
    try:
        with warnings.catch_warnings():  # a damaged file may claim any pickle protocol
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        reason = "it is not a torch file of tensors (refused: unpickling anything else could run code)"
    except (RuntimeError, EOFError, ValueError, OSError, IndexError, KeyError, TypeError, struct.error) as e:
        # the restricted unpickler meets garbage as whatever error its opcode handler hits first
        detail = str(e).split(". ")[0].strip() or type(e).__name__
        reason = f"it is truncated or damaged ({type(e).__name__}: {detail})"
    raise ValueError(f"{who}: {path!r} is not a valid {what}: {reason}" + (f"; {hint}" if hint else ""))


def _is_training_state(sd) -> bool:
    return isinstance(sd, Mapping) and {"recipe", "optimizer", "model"} <= set(sd)


_HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def hf_weights_file(folder: str, who: str) -> str:
    """The weights file of a Hugging Face ``save_pretrained`` folder (one file, not sharded)."""
    for name in _HF_WEIGHTS:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise FileNotFoundError(f"{who}: {folder!r} is a folder but holds neither {' nor '.join(_HF_WEIGHTS)} "
                            f"(a Hugging Face save_pretrained folder of one weights file was expected)")


def read_state_dict(path_or_state_dict) -> dict[str, torch.Tensor]:
    """A flat ``{key: tensor}`` dict from a path (safetensors or torch) or a mapping.

    A folder is read as a Hugging Face ``save_pretrained`` folder (``model.safetensors`` or
    ``pytorch_model.bin``). Wrappers (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped and a DataParallel
    ``module.`` prefix is stripped.
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        path = os.fspath(path_or_state_dict)
        if os.path.isdir(path):
            path = hf_weights_file(path, "load_checkpoint")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"load_checkpoint: no checkpoint file at {path!r}")
        if path.endswith(".safetensors"):
            from safetensors import SafetensorError
            from safetensors.torch import load_file
            try:
                sd = load_file(path)
            except (SafetensorError, OSError) as e:
                raise ValueError(f"load_checkpoint: {path!r} is not a valid safetensors file ({e})") from None
        else:
            sd = torch_load(path, "load_checkpoint")
        if _is_training_state(sd):
            weights = os.path.join(os.path.dirname(path), "last.safetensors")
            raise ValueError(f"load_checkpoint: {path!r} is a training state (for `train --resume`), not weights; "
                             f"load {weights!r} instead")
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


def attention_prefixes(model: nn.Module) -> list[str]:
    """Module paths (with a trailing dot) of the attention layers of ``model``, outermost only."""
    from .layers._base import AttentionLayer

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
    from .models._features import FeatureListNet

    features_only = isinstance(model, FeatureListNet)
    target = model.model if features_only else model
    name = type(target).__name__
    sd = read_state_dict(path_or_state_dict)
    own = target.state_dict()
    # a feature extractor has no classifier, final norm or unused stages: their tensors are not expected
    head = _classifier_prefix(target)

    def ignorable(key: str) -> bool:
        return features_only and (bool(head) and key.startswith(head) or key in model.removed_keys)

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


def load_model(path) -> nn.Module:
    """A model rebuilt from a file or folder that says what it holds, with its weights loaded.

    - a run's ``best.safetensors`` / ``last.safetensors``: ``attnvision train`` stores the model
      record of ``run.json`` (name, kwargs, attached attention, classes, input channels and the
      preprocessing as ``pretrained_cfg``) in the safetensors metadata;
    - a Hugging Face ``save_pretrained`` folder of ``VanForImageClassification`` (``config.json``
      with ``model_type: "van"`` + ``model.safetensors`` or ``pytorch_model.bin``): the ``van_b*``
      whose widths, depths and MLP ratios the config gives, with its number of labels.

    The model is returned in training mode, as :func:`~attnvision.create_model` returns it.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return _load_hf_folder(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_model: no file or folder at {path!r}")
    if not path.endswith(".safetensors"):
        raise ValueError(f"load_model: {path!r} is not a .safetensors file of a run (nor a Hugging Face folder); "
                         f"a plain weights file does not say which model it is: use create_model(name, pretrained=)")
    from safetensors import SafetensorError, safe_open

    from .train.rundir import model_from_record, record_from_metadata
    try:
        with safe_open(path, "pt") as f:
            metadata = f.metadata()
    except (SafetensorError, OSError) as e:
        raise ValueError(f"load_model: {path!r} is not a valid safetensors file ({e})") from None
    model = model_from_record(record_from_metadata(metadata, path, "load_model"), "load_model")
    load_checkpoint(model, path, source="attnvision")
    return model


def _load_hf_folder(folder: str) -> nn.Module:
    from .io import read_json
    from .models.van import hf_van_variant
    from .registry import create_model

    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"load_model: the folder {folder!r} holds no config.json (a Hugging Face "
                                f"save_pretrained folder was expected)")
    config = read_json(config_path, "load_model")
    if not isinstance(config, dict) or config.get("model_type") != "van":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise ValueError(f"load_model: {config_path!r} describes model_type {kind!r}; the Hugging Face "
                         f"models read are 'van' (VanForImageClassification)")
    name = hf_van_variant(config)
    labels = config.get("id2label") or {}
    model = create_model(name, num_classes=len(labels) or config.get("num_labels", 1000),
                         in_chans=config.get("num_channels", 3))
    load_checkpoint(model, hf_weights_file(folder, "load_model"), source="official")
    return model
