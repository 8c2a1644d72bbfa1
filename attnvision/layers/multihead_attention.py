"""Multi-head self-attention (Vaswani et al., "Attention Is All You Need", NeurIPS 2017) on
(B, N, C) tokens, with the position terms of Bello et al. ("Attention Augmented Convolutional
Networks", ICCV 2019) for H×W maps.

    head_h = softmax(Q_h K_hᵀ / √d + R_h) V_h,   Q = XW_q, K = XW_k, V = XW_v
    MHSA(X) = Concat(head_1, …, head_heads) W_O

Position information (``pos``):

- ``"none"``: R = 0. With the same weights the layer equals ``torch.nn.MultiheadAttention``
  (``qkv`` holds its ``in_proj`` rows in the order q, k, v; ``proj`` is its ``out_proj``).
- ``"learned"`` / ``"sinusoidal"``: an absolute embedding added to the tokens before the
  projections, R = 0. ``input_size`` is N, or (H, W) for a 2-D sine-cosine table.
- ``"relative"``: with ``input_size=(H, W)``, Bello et al.'s 2-D relative logits
  R[(x, y), (x', y')] = q_{x,y}ᵀ r^H_{x'−x} + q_{x,y}ᵀ r^W_{y'−y} (eq. 3), one row table and one
  column table of d-vectors shared by the heads; with ``input_size=N`` (sequences), a learned
  bias R[i, j] = b_h[j − i] per head. The tables hold every offset of an ``input_size`` map, so
  any smaller map uses the offsets it has; a larger one is an error.

``forward(x, return_logits=False)`` returns ``out`` or ``(out, logits)``; the logits are
QKᵀ/√d + R before the softmax, (B, heads, N, N). When neither the logits nor the map are
wanted the product runs in ``F.scaled_dot_product_attention`` (R as its additive mask).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._base import AttentionLayer
from ._checks import check_choice, check_positive_int, is_tracing

POS_KINDS = ("none", "learned", "sinusoidal", "relative")


def _size_tuple(module: str, input_size) -> tuple[int, ...]:
    size = (input_size,) if isinstance(input_size, int) else tuple(input_size)
    if len(size) not in (1, 2) or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in size):
        raise ValueError(f"{module}: input_size must be N or (H, W) positive integers, got {input_size!r}")
    return size


def sincos_embedding(size: tuple[int, ...], dim: int) -> torch.Tensor:
    """Vaswani et al.'s sine-cosine table, (N, dim); for (H, W) half the channels encode the row, half the column."""
    def table(n, d):
        pos = torch.arange(n, dtype=torch.float64)[:, None]
        freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float64) * (-math.log(10000.0) / d))
        out = torch.zeros(n, d, dtype=torch.float64)
        out[:, 0::2] = torch.sin(pos * freq)
        out[:, 1::2] = torch.cos(pos * freq[: d // 2])
        return out

    if len(size) == 1:
        return table(size[0], dim).float()
    h, w = size
    if dim % 4:
        raise ValueError(f"sincos_embedding: a 2-D table needs dim divisible by 4, got {dim}")
    rows = table(h, dim // 2)[:, None, :].expand(h, w, dim // 2)
    cols = table(w, dim // 2)[None, :, :].expand(h, w, dim // 2)
    return torch.cat([rows, cols], -1).reshape(h * w, dim).float()


def _offsets(n: int, device) -> torch.Tensor:
    """idx[i, j] = j − i + n − 1: the row of offset j − i in a (2n − 1)-row table."""
    ar = torch.arange(n, device=device)
    return ar[None, :] - ar[:, None] + n - 1


class RelativeLogits2d(nn.Module):
    """Bello et al.'s 2-D relative logits for maps up to ``size`` = (H, W): (B, heads, N, N) from scaled queries."""

    def __init__(self, head_dim: int, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(size)
        h, w = self.size
        self.rel_height = nn.Parameter(torch.randn(2 * h - 1, head_dim) * head_dim ** -0.5)
        self.rel_width = nn.Parameter(torch.randn(2 * w - 1, head_dim) * head_dim ** -0.5)

    def forward(self, q: torch.Tensor, hw: tuple[int, int], module: str) -> torch.Tensor:
        b, heads, n, d = q.shape
        h, w = hw
        big_h, big_w = self.size
        if not is_tracing() and (h > big_h or w > big_w):
            raise ValueError(f"{module}: relative position tables cover maps up to {self.size}, got a {h}×{w} map; "
                             f"build the layer with a larger input_size")
        rh = self.rel_height[big_h - h: big_h + h - 1][_offsets(h, q.device)]  # (h, h, d)
        rw = self.rel_width[big_w - w: big_w + w - 1][_offsets(w, q.device)]   # (w, w, d)
        q = q.reshape(b, heads, h, w, d)
        lh = torch.einsum("bnxyd,xzd->bnxyz", q, rh)  # (B, heads, h, w, h): row offsets
        lw = torch.einsum("bnxyd,yzd->bnxyz", q, rw)  # (B, heads, h, w, w): column offsets
        return (lh[..., :, None] + lw[..., None, :]).reshape(b, heads, n, n)


class RelativeBias1d(nn.Module):
    """A learned bias per head and offset for sequences up to ``length`` tokens: (1, heads, N, N)."""

    def __init__(self, heads: int, length: int):
        super().__init__()
        self.length = length
        self.bias = nn.Parameter(torch.zeros(2 * length - 1, heads))
        nn.init.trunc_normal_(self.bias, std=0.02)

    def forward(self, n: int, module: str) -> torch.Tensor:
        if not is_tracing() and n > self.length:
            raise ValueError(f"{module}: the relative bias covers sequences up to {self.length} tokens, got {n}")
        table = self.bias[self.length - n: self.length + n - 1]  # (2n − 1, heads)
        return table[_offsets(n, table.device)].permute(2, 0, 1).unsqueeze(0)  # (1, heads, N, N)


class MultiHeadSelfAttention(AttentionLayer):
    """Multi-head self-attention on (B, N, C) tokens (see the module docstring).

    Args:
        dim: token channels C. heads: number of heads (C divisible by heads).
        qkv_bias: bias in the q, k, v projections. attn_drop, proj_drop: dropout on the map / output.
        pos: "none", "learned", "sinusoidal" or "relative". input_size: N or (H, W) for ``pos``.
    """

    def __init__(self, dim: int, heads: int = 8, *, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, pos: str = "none", input_size=None):
        super().__init__()
        name = type(self).__name__
        check_positive_int(name, "dim", dim)
        check_positive_int(name, "heads", heads)
        if dim % heads:
            raise ValueError(f"{name}: dim must be divisible by heads, got dim={dim}, heads={heads}")
        check_choice(name, "pos", pos, POS_KINDS)
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.pos = pos
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.input_size: tuple[int, ...] | None = None if pos == "none" else self._position(name, pos, input_size)

    def _position(self, name, pos, input_size):
        if input_size is None:
            raise ValueError(f"{name}: pos={pos!r} needs input_size (N, or (H, W) for maps)")
        size = _size_tuple(name, input_size)
        n = math.prod(size)
        if pos == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, n, self.dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        elif pos == "sinusoidal":
            self.register_buffer("pos_embed", sincos_embedding(size, self.dim)[None], persistent=False)
        elif len(size) == 2:
            self.rel: RelativeLogits2d | RelativeBias1d = RelativeLogits2d(self.head_dim, size)
        else:
            self.rel = RelativeBias1d(self.heads, size[0])
        return size

    def _check_tokens(self, x):
        name = type(self).__name__
        if is_tracing():
            return
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"{name}: expected tokens of shape (B, N, {self.dim}), got {tuple(x.shape)}")

    def _map_size(self, n: int, hw) -> tuple[int, int]:
        if hw is None:
            assert self.input_size is not None  # pos="relative" needs it
            h, w = self.input_size
            if not is_tracing() and h * w != n:
                raise ValueError(f"{type(self).__name__}: {n} tokens do not form the {h}×{w} map of input_size; "
                                 f"pass hw=(H, W)")
            return h, w
        if len(hw) != 2 or hw[0] * hw[1] != n:
            raise ValueError(f"{type(self).__name__}: hw={tuple(hw)} does not match {n} tokens")
        return tuple(hw)

    def project_qkv(self, x: torch.Tensor) -> torch.Tensor:
        """Absolute position (if any), then the q, k, v projection as one (B, N, 3, heads, head_dim) tensor."""
        self._check_tokens(x)
        b, n, _ = x.shape
        if self.pos in ("learned", "sinusoidal"):
            if not is_tracing() and n != self.pos_embed.shape[1]:
                raise ValueError(f"{type(self).__name__}: the {self.pos} embedding holds {self.pos_embed.shape[1]} "
                                 f"positions, got {n} tokens")
            x = x + self.pos_embed
        return self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim)

    def project(self, x: torch.Tensor):
        """Absolute position (if any), then q, k, v, each (B, heads, N, head_dim)."""
        q, k, v = self.project_qkv(x).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def relative_logits(self, q: torch.Tensor, hw=None) -> torch.Tensor | None:
        """R of the module docstring for the scaled queries q/√d, or None without relative position."""
        if self.pos != "relative":
            return None
        n = q.shape[2]
        if isinstance(self.rel, RelativeBias1d):
            if hw is not None:
                raise ValueError(f"{type(self).__name__}: hw is for 2-D relative logits; this layer has a 1-D bias")
            return self.rel(n, type(self).__name__).to(q.dtype)
        return self.rel(q, self._map_size(n, hw), type(self).__name__)

    def logits(self, q: torch.Tensor, k: torch.Tensor, hw=None) -> torch.Tensor:
        """QKᵀ/√d + R: (B, heads, N, N)."""
        q = q * self.scale
        logits = q @ k.transpose(-2, -1)
        rel = self.relative_logits(q, hw)
        return logits if rel is None else logits + rel

    def attend(self, attn: torch.Tensor, v: torch.Tensor, shape) -> torch.Tensor:
        """Dropout on the map A, A·V, heads concatenated, output projection: (B, N, C)."""
        return self.merge_heads(self.attn_drop(attn) @ v, shape)

    def merge_heads(self, out: torch.Tensor, shape) -> torch.Tensor:
        """(B, heads, N, head_dim) heads concatenated to ``shape`` (B, N, C), output projection and its dropout."""
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(shape)))

    def forward(self, x: torch.Tensor, return_logits: bool = False, *, hw=None):
        q, k, v = self.project(x)
        if not (return_logits or self.keep_attention):
            rel = self.relative_logits(q * self.scale, hw) if self.pos == "relative" else None
            p = self.attn_drop.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=rel, dropout_p=p, scale=self.scale)
            return self.merge_heads(out, x.shape)
        logits = self.logits(q, k, hw)  # (B, heads, N, N)
        attn = logits.softmax(-1)
        self._keep(attn)
        out = self.attend(attn, v, x.shape)
        return (out, logits) if return_logits else out

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, pos={self.pos!r}"
