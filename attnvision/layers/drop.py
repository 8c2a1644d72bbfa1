"""Stochastic depth (Huang et al., 2016): drop whole residual branches per sample."""
from __future__ import annotations

import torch
from torch import nn


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Drop the residual branch of a sample with probability ``drop_prob`` (scaled to keep the mean)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"DropPath: drop_prob must be in [0, 1), got {drop_prob!r}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def drop_path_rates(drop_path_rate: float, depth: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to ``drop_path_rate`` over ``depth`` blocks."""
    if depth <= 1:
        return [0.0] * depth
    return [drop_path_rate * i / (depth - 1) for i in range(depth)]
