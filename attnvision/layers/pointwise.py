"""1×1 convolutions that take oneDNN's kernel on one CPU thread.

PyTorch runs a stride-1, undilated 1×1 float32 convolution on the CPU through its im2col/GEMM
path ("slow2d") when it has one thread and fewer than 16 images, and through oneDNN otherwise
(``use_mkldnn`` in ``aten/src/ATen/native/Convolution.cpp``). On the machine of
``benchmarks/results/`` oneDNN is the faster of the two at one thread as well. A 1×1 convolution
does not mix pixels, so a channels-last map (B, C, H, W) is, without a copy, the channels-last
batch (B·H, C, 1, W) of its image rows; with B·H ≥ 16 rows PyTorch itself picks oneDNN, for the
forward and for the backward. ``pointwise_conv2d`` makes that view only where PyTorch would take
the GEMM path; everywhere else it is ``F.conv2d``. Outputs and gradients are those of
``F.conv2d`` up to float rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import is_tracing

_ONEDNN_MIN_BATCH = 16  # PyTorch takes oneDNN for 1×1 convolutions from this batch size on, at any thread count


def _rows_take_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True where ``F.conv2d(x, weight)`` (1×1, stride 1) would take the GEMM path and the row view would not."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and x.shape[0] < _ONEDNN_MIN_BATCH <= x.shape[0] * x.shape[2]
            and torch.get_num_threads() == 1 and torch.backends.mkldnn.is_available()
            and x.is_contiguous(memory_format=torch.channels_last) and weight.shape[2:] == (1, 1))


def pointwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     groups: int = 1) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, groups=groups)`` for a 1×1 ``weight``, run on the rows of a channels-last ``x``
    where that takes oneDNN's kernel instead of the GEMM path (see the module docstring)."""
    if is_tracing() or not _rows_take_onednn(x, weight):
        return F.conv2d(x, weight, bias, groups=groups)
    b, _, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(b * h, 1, w, -1).permute(0, 3, 1, 2)  # (B·H, C, 1, W), a view
    y = F.conv2d(rows, weight, bias, groups=groups)  # (B·H, C', 1, W), channels-last
    return y.permute(0, 2, 3, 1).reshape(b, h, w, -1).permute(0, 3, 1, 2)  # (B, C', H, W), channels-last view


class PointwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` with a 1×1 kernel, the same parameters and state_dict keys, computed by
    ``pointwise_conv2d`` when its stride is 1 (strided ones already take oneDNN). Traced and compiled
    graphs record the plain convolution."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, bias: bool = True, groups: int = 1):
        super().__init__(in_channels, out_channels, 1, stride=stride, bias=bias, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != (1, 1):
            return super().forward(x)
        return pointwise_conv2d(x, self.weight, self.bias, self.groups)
