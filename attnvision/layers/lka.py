"""Large Kernel Attention (Guo, Lu, Liu, Liu and Hu, "Visual Attention Network", CVMJ 2023).

A K×K convolution is decomposed into three parts (Fig. 2 of the paper):

    Attention = Conv_1×1(DW-D-Conv(DW-Conv(F)))                          (eq. 1)
    Output    = Attention ⊗ F                                            (eq. 2)

with DW-Conv a (2d−1)×(2d−1) depth-wise convolution, DW-D-Conv a ⌈K/d⌉×⌈K/d⌉
depth-wise convolution with dilation d, and ⊗ the element-wise product: no sigmoid or
softmax. The default K = 21, d = 3 gives a 5×5 DW conv, a 7×7 DW conv with dilation 3 and a
1×1 conv. For C channels on an H×W map (biases excluded):

    P(K, d) = C·(⌈K/d⌉² + (2d−1)²) + C²                                  (eq. 3)
    F(K, d) = P(K, d)·H·W                                                 (eq. 4)

against K²·C² for a standard K×K convolution and K²·C + C² for a MobileNet-style
depth-wise separable one (Table 2); :func:`lka_cost` computes all three.

The decomposition reaches (2d−1) + d·(⌈K/d⌉−1) pixels in each direction (23 for K=21, d=3)
and keeps H×W: when that dilated extent d·(⌈K/d⌉−1) is odd the map is padded one pixel
more at the bottom/right than at the top/left.

The ablation of the paper's Table 3 is a set of switches, one per row: ``dw_conv=False``
drops the DW conv, ``dilated_conv=False`` the DW-D conv, ``pointwise=False`` the 1×1 conv,
``multiply=False`` drops the product (the module then returns Attention itself, a plain
decomposed large-kernel convolution), and ``sigmoid=True`` gates with σ(Attention) ⊗ F.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._base import AttentionLayer
from ._checks import check_feature_map, check_positive_int, is_tracing
from .create_attn import register_attn
from .pointwise import PointwiseConv2d


def lka_kernels(kernel_size: int, dilation: int) -> tuple[int, int]:
    """(DW kernel, DW-D kernel) of the decomposition: (2d−1, ⌈K/d⌉)."""
    return 2 * dilation - 1, math.ceil(kernel_size / dilation)


def lka_receptive_field(kernel_size: int, dilation: int) -> int:
    """Width in pixels of what one output of the decomposition sees: (2d−1) + d·(⌈K/d⌉−1)."""
    k_dw, k_dil = lka_kernels(kernel_size, dilation)
    return k_dw + dilation * (k_dil - 1)


def lka_cost(dim: int, kernel_size: int, dilation: int, height: int = 1, width: int = 1, *,
             bias: bool = False) -> dict:
    """Parameters and MACs of LKA (eq. 3–4) and of what Table 2 compares it with.

    Returns ``dict(params, macs, product_macs, standard=dict(params, macs), mobilenet=dict(params, macs))``:
    ``params`` = P(K, d) (+3C biases when ``bias``), ``macs`` = P(K, d)·H·W (biases add no MACs),
    ``product_macs`` = C·H·W for Attention ⊗ F (eq. 4 leaves it out),
    ``standard`` a K×K convolution (K²C²), ``mobilenet`` a K×K depth-wise + 1×1 conv (K²C + C²).
    """
    for name, value in (("dim", dim), ("kernel_size", kernel_size), ("dilation", dilation),
                        ("height", height), ("width", width)):
        check_positive_int("lka_cost", name, value)
    k_dw, k_dil = lka_kernels(kernel_size, dilation)
    weights = dim * (k_dil ** 2 + k_dw ** 2) + dim ** 2  # eq. 3
    hw = height * width
    standard = kernel_size ** 2 * dim ** 2
    mobilenet = kernel_size ** 2 * dim + dim ** 2
    return dict(params=weights + (3 * dim if bias else 0), macs=weights * hw, product_macs=dim * hw,
                standard=dict(params=standard, macs=standard * hw),
                mobilenet=dict(params=mobilenet, macs=mobilenet * hw))


# dtypes whose depth-wise kernels are fast on channels_last maps (oneDNN/cuDNN); float64 is not.
FAST_CHANNELS_LAST = (torch.float32, torch.bfloat16, torch.float16)


def _records_plain_conv() -> bool:
    """True while a graph is recorded for another runtime (``torch.fx``, TorchScript, ``torch.export``/ONNX),
    which gets the dilated convolution as one operator. ``torch.compile`` runs on this CPU and takes the phase
    split (inductor calls the same oneDNN kernels for convolutions)."""
    return is_tracing() and not (torch.compiler.is_compiling() and not torch.compiler.is_exporting())


class LKA(AttentionLayer):
    """Large Kernel Attention: ``F ⊗ Conv_1×1(DW-D-Conv(DW-Conv(F)))``; keeps H×W.

    Args:
        dim: channels C (input and output).
        kernel_size: K, the large kernel being approximated (21).
        dilation: d, the dilation of the DW-D conv (3).
        bias: biases on the three convolutions (the authors' code has them).
        dw_conv, dilated_conv, pointwise, multiply, sigmoid: the ablation switches (see the module doc).

    ``keep_attention`` stores Attention (after the sigmoid when ``sigmoid=True``), (B, C, H, W).
    """

    def __init__(self, dim: int, kernel_size: int = 21, dilation: int = 3, *, bias: bool = True,
                 dw_conv: bool = True, dilated_conv: bool = True, pointwise: bool = True,
                 multiply: bool = True, sigmoid: bool = False):
        super().__init__()
        check_positive_int("LKA", "dim", dim)
        check_positive_int("LKA", "kernel_size", kernel_size)
        check_positive_int("LKA", "dilation", dilation)
        if not (dw_conv or dilated_conv or pointwise):
            raise ValueError("LKA: dw_conv, dilated_conv and pointwise are all False; keep at least one convolution")
        self.dim, self.kernel_size, self.dilation = dim, kernel_size, dilation
        self.multiply, self.sigmoid = multiply, sigmoid
        k_dw, k_dil = lka_kernels(kernel_size, dilation)
        extent = dilation * (k_dil - 1)
        # Odd extents cannot be centred: pad the extra pixel at the bottom/right.
        self.pad = None if extent % 2 == 0 else (extent // 2, extent - extent // 2) * 2
        self.conv_dw = (nn.Conv2d(dim, dim, k_dw, padding=k_dw // 2, groups=dim, bias=bias)
                        if dw_conv else None)
        self.conv_dw_dilated = (nn.Conv2d(dim, dim, k_dil, padding=extent // 2 if self.pad is None else 0,
                                          dilation=dilation, groups=dim, bias=bias)
                                if dilated_conv else None)
        self.conv_pw = PointwiseConv2d(dim, dim, bias=bias) if pointwise else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map("LKA", x, self.dim)
        attn = x
        if self.conv_dw is not None:
            attn = self.conv_dw(attn)
        if self.conv_dw_dilated is not None:
            attn = self._dilated(attn)
        if self.conv_pw is not None:
            attn = self.conv_pw(attn)
        if self.sigmoid:
            attn = torch.sigmoid(attn)
        self._keep(attn)
        return x * attn if self.multiply else attn

    def _dilated(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv_dw_dilated
        assert conv is not None  # forward calls this only with the dilated conv
        if self.pad is not None:
            x = F.pad(x, self.pad)
        if (_records_plain_conv() or x.device.type != "cpu" or self.dilation == 1
                or x.dtype not in FAST_CHANNELS_LAST):
            return conv(x)  # exported and traced graphs keep the plain conv; eager and torch.compile take the split
        # CPU kernels for dilated depth-wise convolutions are several times slower than dense
        # ones. A k×k conv with dilation d is a dense k×k conv on each of the d×d phase grids
        # x[:, :, r::d, s::d]: stack the phases in the batch, convolve, interleave them back.
        # Same sums, so same result; the map is zero-padded to a multiple of d first.
        d, k = self.dilation, conv.kernel_size[0]
        B, C, H, W = x.shape
        p = conv.padding[0]
        assert isinstance(p, int)  # built with an int padding, never "same"/"valid"
        h, w = -(-(H + 2 * p - d * (k - 1)) // d), -(-(W + 2 * p - d * (k - 1)) // d)  # output phase grid
        Hp, Wp = (h + k - 1) * d, (w + k - 1) * d
        x = F.pad(x, (p, Wp - W - p, p, Hp - H - p))
        x = x.permute(0, 2, 3, 1).reshape(B, Hp // d, d, Wp // d, d, C)
        x = x.permute(2, 4, 0, 1, 3, 5).reshape(d * d * B, Hp // d, Wp // d, C)  # (d·d·B, H/d, W/d, C)
        y = F.conv2d(x.permute(0, 3, 1, 2), conv.weight, conv.bias, groups=C)  # (d·d·B, C, h, w)
        y = y.permute(0, 2, 3, 1).reshape(d, d, B, h, w, C).permute(2, 3, 0, 4, 1, 5).reshape(B, h * d, w * d, C)
        return y[:, :H + 2 * p - d * (k - 1), :W + 2 * p - d * (k - 1)].permute(0, 3, 1, 2)  # (B, C, H, W)

    def official_key_rules(self):
        return [(r"^conv0\.", "conv_dw."), (r"^conv_spatial\.", "conv_dw_dilated."), (r"^conv1\.", "conv_pw.")]

    def extra_repr(self) -> str:
        switches = [f"{name}={value}" for name, value, default in (
            ("dw_conv", self.conv_dw is not None, True), ("dilated_conv", self.conv_dw_dilated is not None, True),
            ("pointwise", self.conv_pw is not None, True), ("multiply", self.multiply, True),
            ("sigmoid", self.sigmoid, False)) if value != default]
        return ", ".join([f"dim={self.dim}, kernel_size={self.kernel_size}, dilation={self.dilation}", *switches])


register_attn("lka", LKA)
