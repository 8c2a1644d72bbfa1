"""Training checkpoints, always written atomically (temporary file, fsync, rename).

A run directory holds:

- ``last.safetensors`` / ``best.safetensors``: the weights that are evaluated (the EMA weights
  when EMA is on), loadable with :func:`attnvision.load_checkpoint` or ``create_model(pretrained=)``;
- ``last.state.pt``: everything needed to continue (``torch.save``): model (and EMA) weights,
  optimizer, scheduler, gradient scaler, epoch and batch position, best score, metrics so far
  and random-number-generator states (torch, Python, NumPy, CUDA). It holds its own copy of the
  weights so that it is consistent by itself, whatever happened between two writes.

A kill during a save (``kill -9``, a power cut) leaves the previous file in place: the new one only
replaces it by an atomic rename once it is complete on disk; the temporary file it leaves behind
is removed when the run is resumed. A write that fails (a full disk, a read-only folder) is an
``OSError`` with its errno, never the writers' own ``RuntimeError``/``SafetensorError`` that
would hide it, and leaves no temporary file.
"""
from __future__ import annotations

import os
import random
from typing import IO, cast

import numpy as np
import torch

from ..io import atomic_write, atomic_write_bytes
from ..weights import torch_load

LAST_WEIGHTS, BEST_WEIGHTS, LAST_STATE = "last.safetensors", "best.safetensors", "last.state.pt"


def save_weights(path, state_dict: dict, metadata: dict | None = None) -> None:
    from safetensors.torch import save

    # clones: safetensors refuses tensors that share storage (tied weights)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state_dict.items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    # serialised here and written by Python: safetensors' own file writer reports a full disk as a
    # SafetensorError, without the errno
    atomic_write_bytes(path, save(tensors, metadata=meta))


class _Sink:
    """The file ``torch.save`` writes to, keeping the ``OSError`` of a failed write: torch turns it into
    a ``RuntimeError`` ("unexpected pos") that has lost the errno."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.file.flush()


def save_state(path, state: dict) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            sink = _Sink(f)
            try:
                torch.save(state, cast(IO[bytes], sink))  # a file object: write and flush
            except RuntimeError:
                if sink.error is None:
                    raise
                raise sink.error from None
    atomic_write(path, write)


def load_state(path) -> dict:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"train: cannot resume, no training state at {path!r}")
    state = torch_load(path, "train: cannot resume", "training state",
                       hint="start the run again with --overwrite, or train into another --out")
    if not isinstance(state, dict) or "recipe" not in state:
        raise ValueError(f"train: cannot resume: {path!r} is not a training state written by attnvision train")
    return state


def rng_state() -> dict:
    """The states of torch's, Python's and NumPy's global generators (what dropout, a custom dataset's
    augmentation and the like draw from), as tensors and plain values that ``weights_only`` loading takes."""
    legacy = np.random.get_state(legacy=True)
    assert isinstance(legacy, tuple)  # the global generator is MT19937: the legacy tuple
    name, key, pos, has_gauss, cached = legacy
    state = dict(torch=torch.get_rng_state(), python=random.getstate(),
                 numpy=dict(name=name, key=torch.from_numpy(key.astype(np.int64)), pos=int(pos),
                            has_gauss=int(has_gauss), cached=float(cached)))
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "numpy" in state:  # states saved before NumPy's was kept have none
        n = state["numpy"]
        np.random.set_state((n["name"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
