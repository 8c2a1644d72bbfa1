"""Squeeze-and-Excitation (Hu, Shen and Sun, "Squeeze-and-Excitation Networks", CVPR 2018).

    z = GAP(F) ∈ R^C                      (squeeze, eq. 2)
    s = σ(W2 δ(W1 z)),  W1 ∈ R^{C/r×C}, W2 ∈ R^{C×C/r}   (excitation, eq. 3; δ = ReLU)
    out = s ⊙ F                           (eq. 4)

Default reduction r = 16; both fully connected layers carry a bias, as in the authors'
SE-ResNets (SE-ResNet-50: 28,088,024 parameters). ``rd_channels`` sets the hidden width
directly and ``act_layer`` replaces δ, for blocks whose SE is sized from another width than
its input (CoAtNet's MBConv: a quarter of the block's output width, SiLU).
"""
from __future__ import annotations

import torch
from torch import nn

from ._base import AttentionLayer
from ._checks import check_feature_map, check_positive_int, check_reduction


class SE(AttentionLayer):
    def __init__(self, channels: int, reduction: int = 16, *, rd_channels: int | None = None,
                 act_layer: type[nn.Module] | None = None):
        super().__init__()
        if rd_channels is None:
            hidden = check_reduction("SE", channels, reduction)
        else:
            check_positive_int("SE", "channels", channels)
            hidden = check_positive_int("SE", "rd_channels", rd_channels)
        self.channels = channels
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.ReLU(inplace=True) if act_layer is None else act_layer()
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map("SE", x, self.channels)
        z = x.mean((2, 3))                                   # (B, C)
        s = torch.sigmoid(self.fc2(self.act(self.fc1(z))))  # (B, C)
        self._keep(s)
        return x * s[:, :, None, None]
