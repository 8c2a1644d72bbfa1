"""Attention-augmented convolution (Bello, Zoph, Vaswani, Shlens and Le, "Attention Augmented
Convolutional Networks", ICCV 2019), optionally with evolving attention (Wang et al., ICML 2021).

    AAConv(X) = Concat[Conv(X), MHA(X)]                                     (eq. 5)
    MHA(X)    = Concat[O_1, …, O_Nh] W^O,  O_h = softmax((XW_q)(XW_k)ᵀ/√d_kh + S^rel_H + S^rel_W) (XW_v)
                                                                             (eqs. 1–3)

The convolution has ``out_channels − dv`` channels, the attention ``dv`` (key depth ``dk``,
``heads`` heads), with 2-D relative logits S^rel (one row and one column table of
d_kh-vectors shared by the heads; see :class:`~attnvision.layers.MultiHeadSelfAttention`).
q, k, v come from one 1×1 convolution (with bias) and W^O is a 1×1 convolution dv → dv (with
bias), as in the authors' code. A stride s is applied to the attention by a 3×3 average pooling
of stride s of its input (count_include_pad=False). ``downsample=True`` also pools the attention
input by 2 and resizes the attention output back bilinearly: the authors' memory saving for the
28×28 stage of their ResNets.

``evolve=True`` turns the attention into evolving attention:
A_logit = β·CNN(α·prev_logits + (1 − α)·logits) + (1 − β)·(…) (see
:mod:`attnvision.layers.evolving_attention` for the equations and the mapping to the authors'
α/β names); ``forward(x, prev_logits=None)`` then returns ``(out, logits)``. Without it,
``forward(x, return_logits=False)`` returns ``out`` or ``(out, logits)``.

Initialisation as the authors' TensorFlow code (pkuyym/EvolvingAttention
``EAResnet50/official/resnet/resnet_model.py``, ``asconv2d_fixed_padding``): every kernel (the
convolution, q/k/v, W^O and the evolving 3×3 conv) by ``tf.variance_scaling_initializer()``
(:func:`~attnvision.layers._base.tf_variance_scaling_`: fan-in, scale 1, truncated normal), every
bias 0. The relative tables are N(0, 1/d_kh); that code passes d_kh^-0.5 to
``tf.random_normal_initializer`` as its first argument, the mean, with std 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import AttentionLayer, tf_variance_scaling_
from ._checks import check_feature_map, check_positive_int
from .evolving_attention import evolve_logits, evolving_settings, usable_prev
from .multihead_attention import RelativeLogits2d


def _pooled(n: int, stride: int) -> int:
    return (n + 2 - 3) // stride + 1


class AAConv2d(AttentionLayer):
    """Attention-augmented 3×3 (or k×k) convolution (see the module docstring).

    Args:
        in_channels, out_channels, kernel_size, stride: as ``nn.Conv2d`` (output channels in total).
        dk, dv: key and value depths of the attention (divisible by ``heads``; 0 < dv <= out_channels).
        heads: attention heads. relative: 2-D relative logits.
        input_size: the largest (H, W) input the relative tables cover (default 56×56).
        downsample: also pool the attention input by 2 and upsample its output.
        evolve, alpha, beta, attn_kernel_size, activation: evolving attention.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, dk: int, dv: int, heads: int = 8,
                 relative: bool = True, stride: int = 1, input_size=(56, 56), downsample: bool = False,
                 evolve: bool = False, alpha: float = 0.5, beta: float = 1.0, attn_kernel_size: int = 3,
                 activation: str = "relu"):
        super().__init__()
        name = "AAConv2d"
        for arg, value in (("in_channels", in_channels), ("out_channels", out_channels), ("kernel_size", kernel_size),
                           ("dk", dk), ("dv", dv), ("heads", heads), ("stride", stride)):
            check_positive_int(name, arg, value)
        if dk % heads or dv % heads:
            raise ValueError(f"AAConv2d: dk and dv must be divisible by heads={heads}, got dk={dk}, dv={dv}")
        if dv > out_channels:
            raise ValueError(f"AAConv2d: dv must be at most out_channels={out_channels}, got {dv}")
        self.in_channels, self.out_channels, self.dk, self.dv, self.heads = in_channels, out_channels, dk, dv, heads
        self.stride, self.downsample, self.evolve = stride, downsample, evolve
        self.conv = (nn.Conv2d(in_channels, out_channels - dv, kernel_size, stride, kernel_size // 2, bias=False)
                     if dv < out_channels else None)
        self.pool = nn.AvgPool2d(3, stride, 1, count_include_pad=False) if stride > 1 else nn.Identity()
        self.pool_attn = nn.AvgPool2d(3, 2, 1, count_include_pad=False) if downsample else nn.Identity()
        self.qkv = nn.Conv2d(in_channels, 2 * dk + dv, 1)
        self.proj = nn.Conv2d(dv, dv, 1)
        if relative:
            h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
            h, w = _pooled(h, stride), _pooled(w, stride)
            if downsample:
                h, w = _pooled(h, 2), _pooled(w, 2)
            self.rel = RelativeLogits2d(dk // heads, (h, w))
        else:
            self.rel = None
        if evolve:
            self.alpha, self.beta, self.activation, self.attn_conv = evolving_settings(
                name, heads, alpha, beta, attn_kernel_size, activation, kernel_arg="attn_kernel_size")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The authors' initialisation of the kernels and biases (see the module docstring)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                tf_variance_scaling_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, prev_logits: torch.Tensor | None = None, return_logits: bool = False):
        check_feature_map("AAConv2d", x, self.in_channels)
        if prev_logits is not None and not self.evolve:
            raise ValueError("AAConv2d: prev_logits needs evolve=True")
        conv_out = self.conv(x) if self.conv is not None else None
        a = self.pool_attn(self.pool(x))
        b, _, h, w = a.shape
        nh, dkh, dvh = self.heads, self.dk // self.heads, self.dv // self.heads
        q, k, v = self.qkv(a).flatten(2).split([self.dk, self.dk, self.dv], 1)
        q = q.reshape(b, nh, dkh, h * w).transpose(2, 3) * dkh ** -0.5  # (B, heads, N, dkh)
        k = k.reshape(b, nh, dkh, h * w).transpose(2, 3)
        v = v.reshape(b, nh, dvh, h * w).transpose(2, 3)                 # (B, heads, N, dvh)
        if self.evolve:
            prev = usable_prev("AAConv2d", (b, nh, h * w), prev_logits)
            logits = evolve_logits(self._logits(q, k, (h, w)), prev, self.attn_conv.weight, self.attn_conv.bias,
                                   self.alpha, self.beta, self.activation)  # (B, heads, N, N)
        elif return_logits or self.keep_attention:
            logits = self._logits(q, k, (h, w))
        else:
            rel = self.rel(q, (h, w), "AAConv2d") if self.rel is not None else None
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=rel, scale=1.0)
            logits = None
        if logits is not None:
            attn = logits.softmax(-1)
            self._keep(attn)
            o = attn @ v
        o = self.proj(o.transpose(2, 3).reshape(b, self.dv, h, w))  # heads concatenated: (B, dv, h, w)
        if self.downsample:
            size = tuple(_pooled(n, self.stride) if self.stride > 1 else n for n in (x.shape[-2], x.shape[-1]))
            o = F.interpolate(o, size=size, mode="bilinear", align_corners=False)
        out = o if conv_out is None else torch.cat([conv_out, o], 1)  # (B, out_channels, H/s, W/s)
        return (out, logits) if self.evolve or return_logits else out

    def _logits(self, q, k, hw):
        """QKᵀ/√d_kh + S^rel_H + S^rel_W for scaled queries: (B, heads, N, N)."""
        logits = q @ k.transpose(-2, -1)
        return logits if self.rel is None else logits + self.rel(q, hw, "AAConv2d")

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, dk={self.dk}, dv={self.dv}, heads={self.heads}, "
                f"stride={self.stride}, relative={self.rel is not None}, downsample={self.downsample}, "
                f"evolve={self.evolve}")
