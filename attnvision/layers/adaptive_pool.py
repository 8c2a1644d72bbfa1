"""Global pooling of a feature map chosen by name: the options of timm's ``SelectAdaptivePool2d``
(timm/layers/adaptive_avgmax_pool.py), which the classifier heads take as ``global_pool``.

    avg:       (1/HW) Σ_ij x_ij              max:       max_ij x_ij
    avgmax:    ½ (avg + max)                 catavgmax: [avg; max]  (2C features)
    '':        no pooling, the (B, C, H, W) map itself
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice, is_tracing

POOL_TYPES = ("avg", "max", "avgmax", "catavgmax", "")


def _indexed(x: torch.Tensor) -> bool:
    """Whether a max over ``x`` should keep its index: a gradient will flow back through it in eager mode.

    Backward through an indexed max (max pooling, ``max(dim)``) sends each gradient to the one position of
    the maximum, as the CBAM authors' ``F.max_pool2d`` and ``torch.max(x, 1)[0]`` do; ``amax``'s backward
    splits it among ties through a float copy of a full-size mask, several times slower on the CPU.
    Without a gradient ``amax`` is the faster forward, and traced graphs record it too (compiled code fuses
    its backward). Timings: ``benchmarks/bench_pooling.py``.
    """
    return not is_tracing() and x.requires_grad and torch.is_grad_enabled()


def global_max(x: torch.Tensor) -> torch.Tensor:
    """max_ij x_ij of a (B, C, H, W) map: (B, C) (see :func:`_indexed` for how)."""
    return F.adaptive_max_pool2d(x, 1).flatten(1) if _indexed(x) else x.amax((2, 3))


def channel_max(x: torch.Tensor) -> torch.Tensor:
    """max_c x_c of a (B, C, H, W) map: (B, 1, H, W) (see :func:`_indexed` for how)."""
    return x.max(1, keepdim=True).values if _indexed(x) else x.amax(1, keepdim=True)


class SelectAdaptivePool2d(nn.Module):
    """(B, C, H, W) → (B, C·feat_mult()) by ``pool_type`` (see the module docstring); ``''`` passes the map."""

    def __init__(self, pool_type: str = "avg", *, module: str = "SelectAdaptivePool2d"):
        super().__init__()
        check_choice(module, "global_pool", pool_type, POOL_TYPES)
        self.pool_type = pool_type

    def is_identity(self) -> bool:
        return self.pool_type == ""

    def feat_mult(self) -> int:
        """Pooled features per input channel: 2 for ``catavgmax``, else 1."""
        return 2 if self.pool_type == "catavgmax" else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "":
            return x
        if self.pool_type == "avg":
            return x.mean((2, 3))
        if self.pool_type == "max":
            return global_max(x)
        avg, mx = x.mean((2, 3)), global_max(x)
        return 0.5 * (avg + mx) if self.pool_type == "avgmax" else torch.cat([avg, mx], 1)  # (B, C) or (B, 2C)

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"
