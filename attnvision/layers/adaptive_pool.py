"""Global pooling of a feature map chosen by name: the options of timm's ``SelectAdaptivePool2d``
(timm/layers/adaptive_avgmax_pool.py), which the classifier heads take as ``global_pool``.

    avg:       (1/HW) Σ_ij x_ij              max:       max_ij x_ij
    avgmax:    ½ (avg + max)                 catavgmax: [avg; max]  (2C features)
    '':        no pooling, the (B, C, H, W) map itself
"""
from __future__ import annotations

import torch
from torch import nn

from ._checks import check_choice

POOL_TYPES = ("avg", "max", "avgmax", "catavgmax", "")


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
            return x.amax((2, 3))
        avg, mx = x.mean((2, 3)), x.amax((2, 3))
        return 0.5 * (avg + mx) if self.pool_type == "avgmax" else torch.cat([avg, mx], 1)  # (B, C) or (B, 2C)

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"
