"""The reference fixtures in ``tests/reference/`` and the "seeded-v1" weights they were made with.

Each fixture holds the input and outputs of the authors' code, but no weights: every entry of the
official state_dict is a function of its key and shape (``meta["state_dict_shapes"]``), drawn in
float64 from a CPU generator seeded by the key's CRC-32 and rounded to float16. ``load`` rebuilds
that state_dict and checks it against the SHA-256 the fixture stores, so a wrong rebuild fails
loudly instead of reading as a model mismatch.
"""
from __future__ import annotations

import hashlib
import math
import zlib
from pathlib import Path

import torch

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
_SEED_STRIDE = 1_000_003


def _generator(key: str, base_seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(key.encode()) + _SEED_STRIDE * base_seed)


def _draw(key: str, shape: tuple[int, ...], base_seed: int) -> torch.Tensor:
    """One float64 draw for ``key``; the distribution depends on the entry's name and rank."""
    g, name = _generator(key, base_seed), key.rsplit(".", 1)[-1]
    uniform = lambda: torch.rand(shape, generator=g, dtype=torch.float64) + 0.5  # noqa: E731  U(0.5, 1.5)
    normal = lambda: torch.randn(shape, generator=g, dtype=torch.float64)       # noqa: E731
    if name == "running_var" or (len(shape) == 1 and (name == "weight" or "layer_scale" in name)):
        return uniform()
    if name in ("running_mean", "bias"):
        return normal() * 0.1
    if len(shape) >= 2 and name in ("weight", "weight_v"):
        return normal() / math.sqrt(math.prod(shape[1:]))  # N(0, 1/sqrt(fan_in))
    if name == "weight_g":  # weight norm: U(0.5, 1.5) times the per-output-channel norm of weight_v
        raise KeyError(f"{key} is drawn together with its weight_v")
    return normal() * 0.5


def seeded_state_dict(shapes: dict[str, list[int]], base_seed: int = 0) -> dict[str, torch.Tensor]:
    """{official key: shape}, in state_dict order -> {key: float16 tensor} (int64 0 for num_batches_tracked)."""
    sd = {}
    for key, shape in shapes.items():
        shape = tuple(shape)
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(0, dtype=torch.int64)
        elif key.endswith("weight_g"):
            v_key = key[:-1] + "v"
            v = _draw(v_key, tuple(shapes[v_key]), base_seed).half().double()
            u = torch.rand(shape, generator=_generator(key, base_seed), dtype=torch.float64) + 0.5
            sd[key] = (u * v.flatten(1).norm(dim=1).view(shape)).half()
        else:
            sd[key] = _draw(key, shape, base_seed).half()
    return sd


def digest(sd: dict[str, torch.Tensor]) -> str:
    """SHA-256 over key, a zero byte and the raw bytes of each entry, in order."""
    h = hashlib.sha256()
    for key, t in sd.items():
        h.update(key.encode() + b"\0")
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load(name: str) -> dict:
    """A fixture with its rebuilt official weights under ``"state_dict"``
    (float16, checked against the stored digest)."""
    ref = torch.load(REFERENCE_DIR / name, weights_only=True)
    meta = ref["meta"]
    if meta.get("weights") != "seeded-v1":
        raise ValueError(f"{name}: expected seeded-v1 weights, got {meta.get('weights')!r}")
    sd = seeded_state_dict(meta["state_dict_shapes"], meta["base_seed"])
    if digest(sd) != meta["weights_sha256"]:
        raise AssertionError(f"{name}: rebuilt weights do not match the stored SHA-256")
    return {**ref, "state_dict": sd}
