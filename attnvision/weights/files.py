"""Reading weights files: safetensors, torch files (tensors only), Hugging Face ``save_pretrained`` folders.

Wrappers are unwrapped (``{"state_dict": ...}``, ``{"model": ...}``, EMA copies) and a DataParallel
``module.`` prefix is stripped, so that every converter sees one flat ``{key: tensor}`` mapping.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import struct
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

_WRAPPER_KEYS = ("state_dict", "model", "module", "state_dict_ema", "model_ema")

# Plain records a published file may hold beside its tensors, which ``torch_load`` may be told to accept
# (by name): building them runs no code of the file's choosing. timm 0.4's CheckpointSaver stores its
# command line as an ``argparse.Namespace`` under "args" (the VAN authors' files).
SAFE_GLOBALS = {"argparse.Namespace": argparse.Namespace}


def _globals_in(path: str, error: Exception) -> list[str]:
    """The classes and functions a torch file refers to beyond weights_only's own, for the message."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip file (the legacy format, or no torch file at all): the unpickler's word
        found = re.findall(r"GLOBAL ([\w.]+)", str(error))
    return sorted(set(found))


def torch_load(path: str, who: str, what: str = "checkpoint", hint: str = "", safe_globals: Iterable[str] = ()):
    """``torch.load(path, weights_only=True)`` whose failures are one clear ``ValueError``.

    ``weights_only`` unpickles tensors and plain containers only; a file that needs more (or is
    not a torch file at all) is refused, naming what it holds, and the message never suggests the
    unsafe ``weights_only=False``: a pickle from an untrusted source can run any code.
    ``safe_globals`` names classes of :data:`SAFE_GLOBALS` to accept as well.
    """
    unknown = [g for g in safe_globals if g not in SAFE_GLOBALS]
    if unknown:
        raise ValueError(f"{who}: safe_globals may name only {sorted(SAFE_GLOBALS)}, got {unknown}")
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals([SAFE_GLOBALS[g] for g in safe_globals]):
            warnings.simplefilter("ignore", UserWarning)  # a damaged file may claim any pickle protocol
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = "it is not a torch file of tensors (refused: unpickling anything else could run code)"
        found = _globals_in(path, e)
        if found:
            reason += (f"; it holds {', '.join(found)}: where you trust its source, load it, save its state_dict "
                       f"(torch.save or safetensors) and load that file (create_model(..., pretrained=PATH))")
    except (RuntimeError, EOFError, ValueError, OSError, IndexError, KeyError, TypeError, struct.error) as e:
        # the restricted unpickler meets garbage as whatever error its opcode handler hits first
        detail = str(e).split(". ")[0].strip() or type(e).__name__
        reason = f"it is truncated or damaged ({type(e).__name__}: {detail})"
    raise ValueError(f"{who}: {path!r} is not a valid {what}: {reason}" + (f"; {hint}" if hint else ""))


def _is_flat_state_dict(sd: Mapping) -> bool:
    """Tensors by key and no wrapper: a training checkpoint that keeps a tensor beside its ``state_dict``
    (the ECA authors' ``best_prec1``) is still a wrapper."""
    return any(isinstance(v, torch.Tensor) for v in sd.values()) and not any(
        isinstance(sd.get(k), Mapping) for k in _WRAPPER_KEYS)


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


def read_state_dict(path_or_state_dict, safe_globals: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """A flat ``{key: tensor}`` dict from a path (safetensors or torch) or a mapping.

    A folder is read as a Hugging Face ``save_pretrained`` folder (``model.safetensors`` or
    ``pytorch_model.bin``). Wrappers (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped and a DataParallel
    ``module.`` prefix is stripped. ``safe_globals``: see :func:`torch_load`.
    """
    sd: Mapping[str, Any]
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        path = os.fspath(path_or_state_dict)
        if os.path.isdir(path):
            path = hf_weights_file(path, "load_checkpoint")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"load_checkpoint: no checkpoint file at {path!r}")
        if path.endswith(".safetensors"):
            try:
                sd = load_file(path)
            except (SafetensorError, OSError) as e:
                raise ValueError(f"load_checkpoint: {path!r} is not a valid safetensors file ({e})") from None
        else:
            sd = torch_load(path, "load_checkpoint", safe_globals=safe_globals)
        if _is_training_state(sd):
            weights = os.path.join(os.path.dirname(path), "last.safetensors")
            raise ValueError(f"load_checkpoint: {path!r} is a training state (for `train --resume`), not weights; "
                             f"load {weights!r} instead")
    elif isinstance(path_or_state_dict, Mapping):
        sd = path_or_state_dict
    else:
        raise TypeError(f"load_checkpoint: expected a path or a state_dict mapping, "
                        f"got {type(path_or_state_dict).__name__}")
    while isinstance(sd, Mapping) and not _is_flat_state_dict(sd):
        inner = next((sd[k] for k in _WRAPPER_KEYS if isinstance(sd.get(k), Mapping)), None)
        if inner is None:
            raise ValueError(f"load_checkpoint: found no tensors in the checkpoint (top-level keys: {sorted(sd)[:10]})")
        sd = inner
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors
