"""Per-channel learnable residual scale (Touvron et al., CaiT 2021), as used by VAN and ViTs."""
from __future__ import annotations

import torch
from torch import nn


class LayerScale(nn.Module):
    """Multiply by a learned per-channel vector ``gamma`` (init ``init_value``).

    ``channel_dim`` is 1 for (B, C, H, W) maps and -1 for (B, N, C) tokens.
    """

    def __init__(self, dim: int, init_value: float = 1e-5, channel_dim: int = -1):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))
        self.channel_dim = channel_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_dim == 1:
            return x * self.gamma[:, None, None]  # (C, 1, 1) against (B, C, H, W)
        return x * self.gamma
