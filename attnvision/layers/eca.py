"""Efficient Channel Attention (Wang et al., "ECA-Net", CVPR 2020).

    y = GAP(F) ∈ R^C
    ω = σ(C1D_k(y))             (eq. 12: a 1-D convolution across channels, no bias)
    out = ω ⊙ F
    k = ψ(C) = | log2(C)/γ + b/γ |_odd,  γ = 2, b = 1   (eq. 14)

|t|_odd is the odd number nearest to t. The authors' code computes it as ``int(t)``, plus
one when even; that is the nearest odd number for every t except even integers, where it
takes the larger neighbour. We follow the code, so that its checkpoints load.
No dimensionality reduction: the layer has k parameters.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._base import AttentionLayer
from ._checks import check_feature_map, check_positive_int


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """The adaptive kernel size ψ(C) of eq. 14."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(AttentionLayer):
    def __init__(self, channels: int, gamma: float = 2, b: float = 1, k_size: int | None = None):
        super().__init__()
        check_positive_int("ECA", "channels", channels)
        if k_size is None:
            k_size = eca_kernel_size(channels, gamma, b)
        check_positive_int("ECA", "k_size", k_size)
        if k_size % 2 == 0:
            raise ValueError(f"ECA: k_size must be odd so that channels stay aligned, got {k_size}")
        self.channels = channels
        self.k_size = k_size
        self.conv = nn.Conv1d(1, 1, k_size, padding=(k_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map("ECA", x, self.channels)
        y = x.mean((2, 3)).unsqueeze(1)                          # (B, 1, C)
        w = torch.sigmoid(F.conv1d(y, self.conv.weight, padding=self.conv.padding)).squeeze(1)  # (B, C)
        self._keep(w)
        return x * w[:, :, None, None]

    def official_key_rules(self):
        return []  # the authors' module also names its only weight conv.weight

    def extra_repr(self) -> str:
        return f"channels={self.channels}, k_size={self.k_size}"
