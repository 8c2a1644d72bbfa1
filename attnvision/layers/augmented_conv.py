"""Attention-augmented convolution (Bello, Zoph, Vaswani, Shlens and Le, "Attention Augmented
Convolutional Networks", ICCV 2019), optionally with evolving attention (Wang et al., ICML 2021).

    AAConv(X) = Concat[Conv(X), MHA(X)]                                     (eq. 5)
    MHA(X)    = Concat[O_1, …, O_Nh] W^O,  O_h = softmax((XW_q)(XW_k)ᵀ/√d_kh + S^rel_H + S^rel_W) (XW_v)
                                                                             (eqs. 1–3)

The convolution has ``out_channels − dv`` channels, the attention ``dv`` (key depth ``dk``,
``heads`` heads), with 2-D relative logits S^rel (one row and one column table of
d_kh-vectors shared by the heads; see :class:`~attnvision.layers.MultiHeadSelfAttention`).

``pos_encoding`` is the paper's position-encoding ablation (Sec. 4.5, its table comparing none, 2-D
sine, CoordConv and relative encodings on ImageNet):

- ``"relative"`` (default): the 2-D relative logits above;
- ``"sine"``: the Image Transformer's 2-D sinusoids (half the channels encode the row, half the
  column; :func:`~attnvision.layers.multihead_attention.sincos_embedding`) added to the attention's
  input, no relative logits;
- ``"coord"``: CoordConv (Liu et al., NeurIPS 2018): the coordinate channels (x, y, r), x and y
  from −1 to 1 across the map and r = √(x² + y²), concatenated to the attention's input (q, k, v
  read F_in + 3 channels), no relative logits;
- ``"none"``: content logits QKᵀ/√d_kh only.

The convolution's input never carries the position channels.
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
from ._checks import check_choice, check_feature_map, check_positive_int, is_tracing
from .evolving_attention import evolve_logits, evolving_settings, usable_prev
from .multihead_attention import RelativeLogits2d, sincos_embedding

POS_ENCODINGS = ("relative", "sine", "coord", "none")


def _pooled(n: int, stride: int) -> int:
    return (n + 2 - 3) // stride + 1


class AAConv2d(AttentionLayer):
    """Attention-augmented 3×3 (or k×k) convolution (see the module docstring).

    Args:
        in_channels, out_channels, kernel_size, stride: as ``nn.Conv2d`` (output channels in total).
        dk, dv: key and value depths of the attention (divisible by ``heads``; 0 < dv <= out_channels).
        heads: attention heads.
        pos_encoding: "relative" (2-D relative logits, default), "sine", "coord" or "none" (see the
            module docstring).
        input_size: the largest (H, W) input the relative or sine tables cover (default 56×56).
        downsample: also pool the attention input by 2 and upsample its output.
        evolve, alpha, beta, attn_kernel_size, activation: evolving attention.
    """

    pos_embed: torch.Tensor  # buffer, with pos_encoding="sine"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, dk: int, dv: int, heads: int = 8,
                 pos_encoding: str = "relative", stride: int = 1, input_size=(56, 56), downsample: bool = False,
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
        check_choice(name, "pos_encoding", pos_encoding, POS_ENCODINGS)
        if pos_encoding == "sine" and in_channels % 4:
            raise ValueError(f"AAConv2d: pos_encoding='sine' needs in_channels divisible by 4 (half rows, half "
                             f"columns, sine and cosine), got {in_channels}")
        self.in_channels, self.out_channels, self.dk, self.dv, self.heads = in_channels, out_channels, dk, dv, heads
        self.stride, self.downsample, self.evolve, self.pos_encoding = stride, downsample, evolve, pos_encoding
        self.conv = (nn.Conv2d(in_channels, out_channels - dv, kernel_size, stride, kernel_size // 2, bias=False)
                     if dv < out_channels else None)
        self.pool = nn.AvgPool2d(3, stride, 1, count_include_pad=False) if stride > 1 else nn.Identity()
        self.pool_attn = nn.AvgPool2d(3, 2, 1, count_include_pad=False) if downsample else nn.Identity()
        self.qkv = nn.Conv2d(in_channels + (3 if pos_encoding == "coord" else 0), 2 * dk + dv, 1)
        self.proj = nn.Conv2d(dv, dv, 1)
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        h, w = _pooled(h, stride), _pooled(w, stride)
        if downsample:
            h, w = _pooled(h, 2), _pooled(w, 2)
        self.rel = RelativeLogits2d(dk // heads, (h, w)) if pos_encoding == "relative" else None
        if pos_encoding == "sine":  # (1, F_in, h, w): smaller maps take its top-left corner, the same positions
            table = sincos_embedding((h, w), in_channels).T.reshape(1, in_channels, h, w)
            self.register_buffer("pos_embed", table, persistent=False)
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
        a = self._with_position(self.pool_attn(self.pool(x)))
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

    def _with_position(self, a: torch.Tensor) -> torch.Tensor:
        """The attention's input with its absolute position encoding (``"sine"``, ``"coord"``)."""
        b, _, h, w = a.shape
        if self.pos_encoding == "sine":
            big_h, big_w = self.pos_embed.shape[-2:]
            if not is_tracing() and (h > big_h or w > big_w):
                raise ValueError(f"AAConv2d: the sine table covers attention maps up to {big_h}×{big_w}, got a "
                                 f"{h}×{w} map; build the layer with a larger input_size")
            return a + self.pos_embed[:, :, :h, :w].to(a.dtype)
        if self.pos_encoding == "coord":
            ys = torch.linspace(-1.0, 1.0, h, device=a.device, dtype=a.dtype)[:, None].expand(h, w)
            xs = torch.linspace(-1.0, 1.0, w, device=a.device, dtype=a.dtype)[None, :].expand(h, w)
            coords = torch.stack([xs, ys, torch.sqrt(xs * xs + ys * ys)])  # (3, h, w): x, y, r
            return torch.cat([a, coords.expand(b, 3, h, w)], 1)
        return a

    def _logits(self, q, k, hw):
        """QKᵀ/√d_kh + S^rel_H + S^rel_W for scaled queries: (B, heads, N, N)."""
        logits = q @ k.transpose(-2, -1)
        return logits if self.rel is None else logits + self.rel(q, hw, "AAConv2d")

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, dk={self.dk}, dv={self.dv}, heads={self.heads}, "
                f"stride={self.stride}, pos_encoding={self.pos_encoding!r}, downsample={self.downsample}, "
                f"evolve={self.evolve}")
