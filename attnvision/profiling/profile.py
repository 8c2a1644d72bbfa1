"""Parameters and MACs of a model, counted by running it under ``torch.utils.flop_counter``.

One multiply-add counts as one MAC (what the papers call "FLOPs"). Counted: convolutions
(depth-wise, dilated and grouped included), linear layers, matrix products (``matmul``,
``einsum``, ``bmm``), scaled-dot-product and flex attention, and element-wise products of
two tensors (the attention re-weightings ``F ⊙ M(F)``), one MAC per output element. Not
counted, as in the papers: normalisation, activations, pooling, softmax, additions.

Models built on the meta device are counted without allocating any weight, so the
largest models cost nothing: ``profile("resnet152")`` builds it there.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop

from ..factory import create_model
from ..layers.local_attention import local_attention_flop

aten = torch.ops.aten


@dataclass
class Profile:
    """What :func:`profile` measured. ``macs`` are multiply-adds for one forward of ``input_size``."""

    name: str
    input_size: tuple[int, ...]
    params: int
    macs: int
    by_op: dict[str, int] = field(default_factory=dict)

    @property
    def mparams(self) -> float:
        return self.params / 1e6

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def as_dict(self) -> dict:
        return asdict(self)


def _elementwise_product(a, b, *args, out_shape=None, **kwargs) -> int:
    # Shapes arrive as torch.Size (tensors) or numbers (scalars); only tensor⊙tensor counts.
    if not isinstance(a, torch.Size) or not isinstance(b, torch.Size):
        return 0
    if math.prod(a) <= 1 or math.prod(b) <= 1:
        return 0
    return 2 * math.prod(out_shape)  # FLOPs: 2 per MAC, like every other entry


def _cpu_flash_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop(query, key, value)


_EXTRA = {
    aten.mul: _elementwise_product,
    aten.mul_: _elementwise_product,
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_sdpa,
    torch.ops.attnvision.local_attention: local_attention_flop,
}


def count_macs(model: nn.Module, inputs: torch.Tensor) -> tuple[int, dict[str, int]]:
    """MACs of ``model(inputs)`` and their split by aten op."""
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA)
    with counter, torch.no_grad():
        model(inputs)
    by_op = {str(op).replace("aten.", ""): int(n) // 2 for op, n in counter.get_flop_counts()["Global"].items()}
    return sum(by_op.values()), by_op


def _device_of(model: nn.Module) -> torch.device:
    p: torch.Tensor | None = next(model.parameters(), None)
    if p is None:
        p = next(model.buffers(), None)
    return p.device if p is not None else torch.device("cpu")


def profile(model_or_name, input_size=(1, 3, 224, 224), **model_kwargs) -> Profile:
    """Count the parameters and MACs of a model (a module, or a registered name built on the meta device).

    Args:
        model_or_name: an ``nn.Module`` or a name for :func:`attnvision.create_model`.
        input_size: (B, C, H, W) of the input, or (C, H, W) for an image model (one with a
            ``pretrained_cfg``: every registered, ``torchvision:`` and ``timm:`` model), which
            then gets batch 1; MACs scale with B. Other modules take their input's full shape.
        **model_kwargs: passed to ``create_model`` when a name is given.
    """
    input_size = tuple(input_size)
    if len(input_size) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_size):
        raise ValueError(f"profile: input_size must be positive integers like (3, 224, 224) or (1, 3, 224, 224), "
                         f"got {input_size}")
    if isinstance(model_or_name, str):
        name = model_or_name
        with torch.device("meta"):
            model = create_model(name, **model_kwargs)
    elif isinstance(model_or_name, nn.Module):
        if model_kwargs:
            raise ValueError(f"profile: model keyword arguments {sorted(model_kwargs)} need a model name, not a module")
        model, name = model_or_name, type(model_or_name).__name__
    else:
        raise TypeError(f"profile: expected an nn.Module or a model name, got {type(model_or_name).__name__}")
    if len(input_size) == 3 and isinstance(getattr(model, "pretrained_cfg", None), dict):
        input_size = (1, *input_size)  # (C, H, W) of an image model
    params = sum(p.numel() for p in model.parameters())
    was_training = model.training
    model.eval()
    try:
        macs, by_op = count_macs(model, torch.zeros(input_size, device=_device_of(model)))
    finally:
        model.train(was_training)
    return Profile(name=name, input_size=input_size, params=params, macs=macs, by_op=by_op)
