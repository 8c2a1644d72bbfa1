"""MBConv as CoAtNet uses it (Dai, Liu, Le and Tan, "CoAtNet: Marrying Convolution and
Attention for All Data Sizes", NeurIPS 2021, Sec. 2.3 and Appendix A.1).

A pre-norm inverted bottleneck (Sandler et al., MobileNetV2) with squeeze-excitation:

    x ← x + Proj(SE(DWConv(Conv(Norm(x)))))                          (stride 1, same width)
    x ← Proj(Pool(x)) + Proj(SE(DWConv↓(Conv(Norm(x)))))             (first block of a stage)

Norm is BatchNorm without activation; Conv is a 1×1 expansion to ``expand_ratio`` × the
*output* width followed by BN and GELU; DWConv is a 3×3 depth-wise conv followed by BN and
GELU; SE reduces to ``se_ratio`` × the output width with SiLU; Proj is a 1×1 conv with bias.
The paper leaves these details out; they follow Google Research's reference TensorFlow code
for these blocks (github.com/google-research/maxvit, "the reference code" below). The shortcut
average-pools 2×2 when the block strides and projects with a 1×1 conv when the width changes.

Where the stride sits: the reference code strides the depth-wise conv (the default); the
paper's equation strides the first 1×1 conv (``stride_in_1x1=True``), which costs fewer
multiply-adds because the expansion then runs at the output resolution.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_feature_map, check_positive_int
from .drop import DropPath
from .pointwise import PointwiseConv2d
from .squeeze_excite import SE

BN_EPS = 1e-3  # the reference code's (TensorFlow's) batch-norm epsilon


def pool2x2(x: torch.Tensor) -> torch.Tensor:
    """2×2 average pooling with stride 2; an odd border row/column is averaged on its own,
    like the strided 3×3 convs beside it (output ⌈H/2⌉ × ⌈W/2⌉)."""
    return F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)


class MBConv(nn.Module):
    """CoAtNet's MBConv block (see the module docstring for the equations).

    Args:
        in_chs, out_chs: input and output widths.
        stride: 1 or 2.
        expand_ratio: inner width = ``expand_ratio`` × ``out_chs``.
        se_ratio: SE hidden width = ``se_ratio`` × ``out_chs`` (0 or None: no SE).
        drop_path: stochastic-depth rate of the residual branch.
        stride_in_1x1: stride the expansion conv (the paper's equation) instead of the
            depth-wise conv (the reference code).
        act_layer, se_act_layer: activations of the convs and of the SE.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, expand_ratio: float = 4, se_ratio: float = 0.25,
                 *, drop_path: float = 0.0, stride_in_1x1: bool = False, act_layer: type[nn.Module] = nn.GELU,
                 se_act_layer: type[nn.Module] = nn.SiLU):
        super().__init__()
        check_positive_int("MBConv", "in_chs", in_chs)
        check_positive_int("MBConv", "out_chs", out_chs)
        if stride not in (1, 2):
            raise ValueError(f"MBConv: stride must be 1 or 2, got {stride!r}")
        if not expand_ratio > 0:
            raise ValueError(f"MBConv: expand_ratio must be positive, got {expand_ratio!r}")
        if se_ratio is not None and not 0 <= se_ratio <= 1:
            raise ValueError(f"MBConv: se_ratio must be in [0, 1] or None, got {se_ratio!r}")
        mid = int(out_chs * expand_ratio)
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)

        self.shortcut = PointwiseConv2d(in_chs, out_chs) if in_chs != out_chs else nn.Identity()
        self.pre_norm = nn.BatchNorm2d(in_chs, eps=BN_EPS)
        self.conv1 = PointwiseConv2d(in_chs, mid, stride=s1, bias=False)
        self.norm1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self.act1 = act_layer()
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=s3, padding=1, groups=mid, bias=False)
        self.norm2 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self.act2 = act_layer()
        rd = max(1, int(out_chs * se_ratio)) if se_ratio else 0
        self.se = SE(mid, rd_channels=rd, act_layer=se_act_layer) if rd else nn.Identity()
        self.conv3 = PointwiseConv2d(mid, out_chs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map("MBConv", x, self.in_chs)
        shortcut = pool2x2(x) if self.stride == 2 else x
        shortcut = self.shortcut(shortcut)
        x = self.pre_norm(x)
        x = self.act1(self.norm1(self.conv1(x)))        # (B, mid, H', W')
        x = self.act2(self.norm2(self.conv2(x)))        # (B, mid, H/s, W/s)
        x = self.conv3(self.se(x))                      # (B, out, H/s, W/s)
        return shortcut + self.drop_path(x)
