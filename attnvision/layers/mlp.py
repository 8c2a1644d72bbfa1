"""Token MLP shared by the transformer blocks: Linear → activation → dropout → Linear → dropout; and
:class:`MapLinear`, the linear layer of blocks that work on channels-last (B, H, W, C) maps."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import is_tracing
from .pointwise import pointwise_conv2d


class MapLinear(nn.Linear):
    """``nn.Linear`` over the last dimension, the same module and parameters; on (B, H, W, C) maps on the CPU
    it runs as a 1×1 convolution of the channels-last map (B, C, H, W) those maps are a view of, which
    oneDNN computes faster than the matrix-product route at 2 threads on the machine of
    ``benchmarks/results/`` (and as fast at 1). Traced and compiled graphs record the plain linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_tracing() or x.dim() != 4 or x.device.type != "cpu":
            return F.linear(x, self.weight, self.bias)
        y = pointwise_conv2d(x.permute(0, 3, 1, 2), self.weight[:, :, None, None], self.bias)
        return y.permute(0, 2, 3, 1)


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer: type[nn.Module] = nn.GELU, drop: float = 0.0, bias: bool = True,
                 linear_layer: type[nn.Linear] = nn.Linear):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = linear_layer(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = linear_layer(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x):
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))
