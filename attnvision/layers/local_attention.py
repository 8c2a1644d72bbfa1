"""Stand-alone local self-attention (SASA) and its spatially-aware attention stem.

Ramachandran, Parmar, Vaswani, Bello, Levskaya and Shlens, *Stand-Alone Self-Attention in
Vision Models*, NeurIPS 2019. For every pixel (i, j), multi-head attention over its k×k
neighbourhood N_k(i, j), with 1×1 projections q = W_Q x, k = W_K x, v = W_V x (eq. 2-3):

    y_ij = Σ_{(a,b) ∈ N_k(i,j)} softmax_ab(q_ijᵀ k_ab + q_ijᵀ r_{a−i,b−j}) v_ab

per head, heads concatenated. The relative embedding r_{a−i,b−j} is the concatenation of a
row-offset embedding r_{a−i} (the first half of each head's channels) and a column-offset
embedding r_{b−j} (the second half), so q_ijᵀ r_{a−i,b−j} = q_rowᵀ r_{a−i} + q_colᵀ r_{b−j}.
``pos="absolute"`` instead adds a 2-D sinusoidal encoding to the input of W_Q and W_K;
``pos="none"`` keeps the content term only (the paper's Table 5 ablation). With relative positions,
``logits`` ablates the two interactions: "both" (q·k + q·r), "content" (q·k alone, the same model as
``pos="none"``) or "position" (q·r alone: W_K is dropped). The logits are not
scaled, as in eq. 2. Positions outside the image are not pixels: they take no part in the
softmax. ``stride > 1`` is the attention followed by stride×stride average pooling (Sec. 3.1).

Implementation. The usual implementation unfolds keys and values into k²·C·H·W tensors. Here
the image is cut into small query tiles; each tile attends to its halo (the tile grown by the
window), a dense (tile, halo) score block in which an additive mask removes every key outside
the query's own window or outside the image (its value lies so far below any logit that the
key's softmax weight is exactly 0). The scores are built and consumed in chunks (at least 2^19
scores on the CPU, or a sixteenth of all), in the forward and again in the backward pass, so
what autograd keeps is q, k, v and the output, and nothing the size of k²·C·H·W is ever
allocated. The kernel is one custom operator
(``attnvision::local_attention``) with its own backward and its own MAC formula, so
``torch.compile`` treats it as a single op and the profiler counts the attention's true
multiply-adds, B·heads·H·W·k²·(d_qk + d_v). Exporters (``torch.export``, ``torch.onnx.export``) see
the same function written in standard operators instead (:func:`local_attention_decomposed`: the
keys and values unfolded into their k×k windows, k²-fold memory), which ONNX runtimes run.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import AttentionLayer
from ._checks import check_choice, check_feature_map, check_positive_int

POS_MODES = ("relative", "absolute", "none")
LOGIT_MODES = ("both", "content", "position")
_TILE = 3                           # query tile side: small tiles keep the halo waste (tile+k−1)²/k² low
_CHUNK_CPU, _CHUNK_CUDA = 1 << 19, 1 << 24   # least score elements per chunk (whole head-images, rounded up)
_MAX_CHUNKS = 16                    # not too few: a chunk's scores should stay in cache; not too many: per-op overhead


# -- the kernel ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def _plan(height: int, width: int, kernel_size: int, tile: int, device: torch.device):
    """Tiling of an H×W map: tile sides, halo sides, the separable masks and the offset logits' index tables."""
    c = (kernel_size - 1) // 2
    bh, bw = min(tile, height), min(tile, width)
    nth, ntw = -(-height // bh), -(-width // bw)
    lh, lw = bh + kernel_size - 1, bw + kernel_size - 1
    hk, wk = nth * bh + kernel_size - 1, ntw * bw + kernel_size - 1   # padded key grid

    def allowed(num_tiles, side, halo, size):
        # (tile, query offset, halo offset): the key is in the query's window and inside the image.
        # Queries in the padding past the image see their whole window so that no row is empty.
        i = torch.arange(side, device=device)[:, None]
        a = torch.arange(halo, device=device)[None]
        in_window = (a - i >= 0) & (a - i < kernel_size)
        t = torch.arange(num_tiles, device=device)[:, None, None]
        key_inside = (t * side + a - c >= 0) & (t * side + a - c < size)
        query_padding = t * side + i >= size
        return in_window & (key_inside | query_padding)

    # The relative logits of query (i, j) of a tile, bias_row[u] + bias_col[v] at halo key (i + u, j + v), are
    # laid on the halo by a gather ("spread": the halo row a takes bias_row[a − i], clamped; positions outside
    # the window get some finite value, then the mask's) and a product with a 0/1 matrix that adds a row's
    # and a column's value at each halo key. The backward gathers the window's offsets back ("collect").
    qi = torch.arange(bh * bw, device=device)
    qr, qc = (qi // bw)[:, None], (qi % bw)[:, None]
    a, b, u = torch.arange(lh, device=device), torch.arange(lw, device=device), torch.arange(kernel_size, device=device)
    spread = torch.cat([(a - qr).clamp(0, kernel_size - 1), kernel_size + (b - qc).clamp(0, kernel_size - 1)], 1)
    collect = torch.cat([qr + u, lh + qc + u], 1)
    eye_h, eye_w = torch.eye(lh, dtype=torch.bool, device=device), torch.eye(lw, dtype=torch.bool, device=device)
    add_rows_cols = torch.cat([eye_h[:, :, None].expand(lh, lh, lw).reshape(lh, lh * lw),    # row a' → keys (a', ·)
                               eye_w[:, None, :].expand(lw, lh, lw).reshape(lw, lh * lw)])   # column b' → keys (·, b')
    return dict(c=c, bh=bh, bw=bw, nth=nth, ntw=ntw, lh=lh, lw=lw, hk=hk, wk=wk,
                row_ok=allowed(nth, bh, lh, height), col_ok=allowed(ntw, bw, lw, width),
                spread=spread, collect=collect, add_rows_cols=add_rows_cols)


class _Tiler:
    """Shared bookkeeping of the forward and backward kernels."""

    # set from _plan's dict in __init__
    c: int
    bh: int
    bw: int
    nth: int
    ntw: int
    lh: int
    lw: int
    hk: int
    wk: int
    spread: Tensor
    collect: Tensor

    def __init__(self, q: Tensor, kernel_size: int, tile: int):
        self.B, self.h, self.H, self.W, self.d = q.shape
        self.ks = kernel_size
        p = _plan(self.H, self.W, kernel_size, tile, q.device)
        self.__dict__.update(p)
        self.BH = self.B * self.h
        self.b2, self.L = self.bh * self.bw, self.lh * self.lw
        self.hq, self.wq = self.nth * self.bh, self.ntw * self.bw
        # The mask is additive and separable, a halo row's value plus a halo column's: 0, or half the dtype's
        # lowest value, so that a masked key's logit stays finite in the 0/1 product of :meth:`scores` (−∞ times 0
        # would be NaN) yet lies so far below any real logit that its softmax weight is exactly 0.
        low = torch.full((), torch.finfo(q.dtype).min / 2, dtype=q.dtype, device=q.device)
        zero = torch.zeros((), dtype=q.dtype, device=q.device)
        row = torch.where(p["row_ok"], zero, low)[:, None, :, None, :]   # (nth, 1, bh, 1, lh)
        col = torch.where(p["col_ok"], zero, low)[None, :, None, :, :]   # (1, ntw, 1, bw, lw)
        shape = (self.nth, self.ntw, self.bh, self.bw)
        self.mask = torch.cat([row.expand(*shape, self.lh), col.expand(*shape, self.lw)], -1).reshape(
            self.nth, self.ntw, self.b2, self.lh + self.lw)   # (tile row, tile column, query, halo row | column)
        self.add_rows_cols = p["add_rows_cols"].to(q.dtype)
        per_row = self.ntw * self.b2 * self.L
        budget = max(_CHUNK_CUDA if q.is_cuda else _CHUNK_CPU, self.BH * self.nth * per_row // _MAX_CHUNKS)
        self.rows_per_chunk = max(1, min(self.nth, budget // per_row))
        self.groups_per_chunk = max(1, min(self.BH, -(-budget // (self.rows_per_chunk * per_row))))

    def pad_queries(self, x: Tensor) -> Tensor:    # (B, h, H, W, e) → (BH, Hq, Wq, e)
        x = F.pad(x, (0, 0, 0, self.wq - self.W, 0, self.hq - self.H))
        return x.reshape(self.BH, self.hq, self.wq, x.shape[-1])

    def pad_keys(self, x: Tensor) -> Tensor:       # (B, h, H, W, e) → (BH, Hk·Wk, e)
        c = self.c
        # halos() needs this layout
        x = F.pad(x, (0, 0, c, self.wk - self.W - c, c, self.hk - self.H - c)).contiguous()
        return x.reshape(self.BH, self.hk * self.wk, x.shape[-1])

    def chunks(self):
        for r0 in range(0, self.nth, self.rows_per_chunk):
            r1 = min(self.nth, r0 + self.rows_per_chunk)
            for g0 in range(0, self.BH, self.groups_per_chunk):
                yield r0, r1, g0, min(self.BH, g0 + self.groups_per_chunk)

    def halos(self, x: Tensor, r0, r1, g0, g1) -> Tensor:
        """The halos of a chunk's tiles as a view of the padded keys: (g, rows, ntw, lh, lw, e)."""
        e, row = x.shape[-1], self.wk * x.shape[-1]
        offset = x.storage_offset() + g0 * x.stride(0) + r0 * self.bh * row
        return x.as_strided((g1 - g0, r1 - r0, self.ntw, self.lh, self.lw, e),
                            (x.stride(0), self.bh * row, self.bw * e, row, e, 1), offset)

    def gather(self, x: Tensor, r0, r1, g0, g1) -> Tensor:     # → (N, lh·lw, e)
        return self.halos(x, r0, r1, g0, g1).reshape(-1, self.L, x.shape[-1])

    def scatter_add(self, x: Tensor, src: Tensor, r0, r1, g0, g1) -> None:
        """x[halos] += src. Halos overlap, so add them in phases of tiles that do not."""
        view = self.halos(x, r0, r1, g0, g1)
        src = src.reshape(view.shape)
        mh, mw = -(-self.lh // self.bh), -(-self.lw // self.bw)
        for ph in range(min(mh, r1 - r0)):
            for pw in range(min(mw, self.ntw)):
                view[:, ph::mh, pw::mw].add_(src[:, ph::mh, pw::mw])

    def tiles(self, x: Tensor, r0, r1, g0, g1) -> Tensor:   # (BH, Hq, Wq, e) → (N, bh·bw, e)
        e = x.shape[-1]
        x = x[g0:g1, r0 * self.bh:r1 * self.bh]
        x = x.reshape(g1 - g0, r1 - r0, self.bh, self.ntw, self.bw, e).transpose(2, 3)
        return x.reshape(-1, self.b2, e)

    def untile(self, x: Tensor, r0, r1, g0, g1) -> Tensor:  # (N, bh·bw, e) → (g, rows, Wq, e)
        e = x.shape[-1]
        x = x.reshape(g1 - g0, r1 - r0, self.ntw, self.bh, self.bw, e).transpose(2, 3)
        return x.reshape(g1 - g0, (r1 - r0) * self.bh, self.wq, e)

    def scores(self, Q, K, biases, r0, r1, g0, g1) -> Tensor:
        """Masked logits of one chunk: (N, bh·bw, lh·lw). ``biases``: the padded (BH, Hq, Wq, 2k) row and
        column offset logits, or None."""
        mask = self.mask[r0:r1]                                                  # (rows, ntw, bh·bw, lh + lw)
        if biases is None:
            spread = mask.expand(g1 - g0, *mask.shape)
        else:
            T = self.tiles(biases, r0, r1, g0, g1)                               # (N, bh·bw, 2k)
            spread = torch.gather(T, 2, self.spread.expand(T.shape[0], -1, -1))   # (N, bh·bw, lh + lw)
            spread.view(g1 - g0, -1).add_(mask.reshape(1, -1))
        S = torch.mm(spread.reshape(-1, self.lh + self.lw), self.add_rows_cols)  # row's + column's, exactly
        return S.view(-1, self.b2, self.L).baddbmm_(Q, K.transpose(1, 2))

    def bias_grad(self, dS: Tensor) -> Tensor:
        """The adjoint of the offset logits' spreading in :meth:`scores`: (N, bh·bw, L) → (N, bh·bw, 2k). Keys
        outside a query's window add nothing: their softmax weight, hence their ∂L/∂S, is exactly 0."""
        spread = torch.mm(dS.view(-1, self.L), self.add_rows_cols.t()).view(dS.shape[0], self.b2, -1)
        return torch.gather(spread, 2, self.collect.expand(dS.shape[0], -1, -1))


def _forward_kernel(q, k, v, bias_row, bias_col, kernel_size: int, tile: int) -> Tensor:
    t = _Tiler(q, kernel_size, tile)
    dv = v.shape[-1]
    qp, kp, vp = t.pad_queries(q), t.pad_keys(k), t.pad_keys(v)
    biases = t.pad_queries(torch.cat([bias_row, bias_col], -1)) if bias_row is not None else None
    out = q.new_empty(t.BH, t.hq, t.wq, dv)
    for r0, r1, g0, g1 in t.chunks():
        Q = t.tiles(qp, r0, r1, g0, g1)
        K, V = t.gather(kp, r0, r1, g0, g1), t.gather(vp, r0, r1, g0, g1)
        P = torch.softmax(t.scores(Q, K, biases, r0, r1, g0, g1), dim=-1)
        out[g0:g1, r0 * t.bh:r1 * t.bh] = t.untile(torch.bmm(P, V), r0, r1, g0, g1)
    return out[:, :t.H, :t.W].reshape(t.B, t.h, t.H, t.W, dv).contiguous()


def _backward_kernel(grad, q, k, v, bias_row, bias_col, out, kernel_size: int, tile: int):
    t = _Tiler(q, kernel_size, tile)
    dv = v.shape[-1]
    qp, kp, vp = t.pad_queries(q), t.pad_keys(k), t.pad_keys(v)
    gp = t.pad_queries(grad)
    delta = t.pad_queries(torch.linalg.vecdot(grad, out).unsqueeze(-1))   # rowsum(dO ⊙ O) of the softmax backward
    biases = t.pad_queries(torch.cat([bias_row, bias_col], -1)) if bias_row is not None else None
    dq = torch.empty_like(qp)   # every tile is written once; keys and values are added to, halos overlapping
    dk, dvv = torch.zeros_like(kp), torch.zeros_like(vp)
    d_biases = torch.empty_like(biases) if biases is not None else None
    for r0, r1, g0, g1 in t.chunks():
        Q = t.tiles(qp, r0, r1, g0, g1)
        K, V = t.gather(kp, r0, r1, g0, g1), t.gather(vp, r0, r1, g0, g1)
        P = torch.softmax(t.scores(Q, K, biases, r0, r1, g0, g1), dim=-1)
        dO = t.tiles(gp, r0, r1, g0, g1)
        t.scatter_add(dvv, torch.bmm(P.transpose(1, 2), dO), r0, r1, g0, g1)
        dS = torch.bmm(dO, V.transpose(1, 2)).sub_(t.tiles(delta, r0, r1, g0, g1)).mul_(P)   # (N, bh·bw, L)
        dq[g0:g1, r0 * t.bh:r1 * t.bh] = t.untile(torch.bmm(dS, K), r0, r1, g0, g1)
        t.scatter_add(dk, torch.bmm(dS.transpose(1, 2), Q), r0, r1, g0, g1)
        if d_biases is not None:
            d_biases[g0:g1, r0 * t.bh:r1 * t.bh] = t.untile(t.bias_grad(dS), r0, r1, g0, g1)
    c = t.c
    shape = (t.B, t.h, t.H, t.W)
    dq = dq[:, :t.H, :t.W].reshape(*shape, t.d)
    dk = dk.reshape(t.BH, t.hk, t.wk, t.d)[:, c:c + t.H, c:c + t.W].reshape(*shape, t.d)
    dvv = dvv.reshape(t.BH, t.hk, t.wk, dv)[:, c:c + t.H, c:c + t.W].reshape(*shape, dv)
    if d_biases is not None:
        d_biases = d_biases[:, :t.H, :t.W].reshape(*shape, 2 * t.ks)
        # copies, never views: the two halves of one map would alias each other (a custom op's outputs may not)
        dbr, dbc = (d_biases[..., i:i + t.ks].clone(memory_format=torch.contiguous_format) for i in (0, t.ks))
    else:
        dbr, dbc = q.new_empty(0), q.new_empty(0)   # two tensors: a custom op's outputs may not alias
    return [g.contiguous() for g in (dq, dk, dvv, dbr, dbc)]


@torch.library.custom_op("attnvision::local_attention", mutates_args=())
def _local_attention_op(q: Tensor, k: Tensor, v: Tensor, bias_row: Optional[Tensor], bias_col: Optional[Tensor],
                        kernel_size: int, tile: int) -> Tensor:
    return _forward_kernel(q, k, v, bias_row, bias_col, kernel_size, tile)


@_local_attention_op.register_fake
def _(q, k, v, bias_row, bias_col, kernel_size, tile):
    return torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device=q.device)  # contiguous, as the kernel


@torch.library.custom_op("attnvision::local_attention_backward", mutates_args=())
def _local_attention_backward_op(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, bias_row: Optional[Tensor],
                                 bias_col: Optional[Tensor], out: Tensor, kernel_size: int,
                                 tile: int) -> list[Tensor]:
    return _backward_kernel(grad, q, k, v, bias_row, bias_col, out, kernel_size, tile)


@_local_attention_backward_op.register_fake
def _(grad, q, k, v, bias_row, bias_col, out, kernel_size, tile):
    def like(b):  # the kernel returns contiguous gradients, whatever the inputs' strides (new_empty may not)
        return torch.empty(b.shape, dtype=b.dtype, device=b.device) if b is not None else q.new_empty(0)
    return [like(q), like(k), like(v), like(bias_row), like(bias_col)]


def _setup_context(ctx, inputs, output):
    q, k, v, bias_row, bias_col, kernel_size, tile = inputs
    ctx.save_for_backward(q, k, v, bias_row, bias_col, output)
    ctx.kernel_size, ctx.tile = kernel_size, tile
    ctx.has_bias = bias_row is not None


def _backward(ctx, grad):
    q, k, v, bias_row, bias_col, out = ctx.saved_tensors
    dq, dk, dv, dbr, dbc = _local_attention_backward_op(grad.contiguous(), q, k, v, bias_row, bias_col, out,
                                                        ctx.kernel_size, ctx.tile)
    if not ctx.has_bias:
        dbr = dbc = None
    return dq, dk, dv, dbr, dbc, None, None


_local_attention_op.register_autograd(_backward, setup_context=_setup_context)


def local_attention_flop(q_shape, k_shape, v_shape, bias_row_shape, bias_col_shape, kernel_size, tile,
                         out_shape=None, **kwargs) -> int:
    """FLOPs (2 per multiply-add) of ``attnvision::local_attention``: q·k and attention·v over the k×k windows."""
    B, h, H, W, d = q_shape
    return 2 * B * h * H * W * kernel_size * kernel_size * (d + v_shape[-1])


def local_attention(q: Tensor, k: Tensor, v: Tensor, kernel_size: int, bias_row: Tensor | None = None,
                    bias_col: Tensor | None = None, tile: int = _TILE) -> Tensor:
    """Exact k×k neighbourhood attention, memory-efficient: ``softmax(qᵀk + bias) v`` over each window.

    Args:
        q, k: (B, heads, H, W, d); v: (B, heads, H, W, d_v).
        kernel_size: window side k; the window of (i, j) covers rows i−⌊(k−1)/2⌋ … i+⌈(k−1)/2⌉.
        bias_row, bias_col: optional (B, heads, H, W, k) logits added for the key's row / column
            offset in the window (SASA's q_rowᵀ r_{a−i} and q_colᵀ r_{b−j}); both or neither.
        tile: query tile side of the halo computation (a speed knob; the result does not depend on it).

    Returns: (B, heads, H, W, d_v). Keys outside the image are masked out of the softmax.
    """
    if (bias_row is None) != (bias_col is None):
        raise ValueError("local_attention: give both bias_row and bias_col, or neither")
    if torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
        return local_attention_decomposed(q, k, v, kernel_size, bias_row, bias_col)
    return _local_attention_op(q, k, v, bias_row, bias_col, kernel_size, tile)


def _windows(x: Tensor, kernel_size: int, pad_value: float = 0.0) -> Tensor:
    """(B, h, H, W, e) → (B, h, H, W, k², e): the k×k window of every pixel, row-major, ``pad_value``
    outside the image."""
    B, h, H, W, e = x.shape
    c = (kernel_size - 1) // 2
    x = F.pad(x.permute(0, 1, 4, 2, 3).reshape(B, h * e, H, W), (c, kernel_size - 1 - c, c, kernel_size - 1 - c),
              value=pad_value)
    x = F.unfold(x, kernel_size)                                                    # (B, h·e·k², H·W)
    return x.reshape(B, h, e, kernel_size * kernel_size, H, W).permute(0, 1, 4, 5, 3, 2)


def local_attention_decomposed(q: Tensor, k: Tensor, v: Tensor, kernel_size: int, bias_row: Tensor | None = None,
                               bias_col: Tensor | None = None) -> Tensor:
    """:func:`local_attention` in standard operators (pad, unfold, softmax), for exporters: the window
    (a, b) of pixel (i, j) has logit q_ijᵀ k_(i+a−c, j+b−c) + bias_row[a] + bias_col[b], −∞ outside the image."""
    logits = (q.unsqueeze(-2) * _windows(k, kernel_size)).sum(-1)                    # (B, h, H, W, k²)
    if bias_row is not None:
        assert bias_col is not None  # both or neither, as local_attention checks
        logits = logits + (bias_row.unsqueeze(-1) + bias_col.unsqueeze(-2)).flatten(-2)
    inside = _windows(q.new_ones(1, 1, q.shape[2], q.shape[3], 1), kernel_size)[..., 0] > 0
    attn = logits.masked_fill(~inside, float("-inf")).softmax(-1)
    return (attn.unsqueeze(-1) * _windows(v, kernel_size)).sum(-2)                  # (B, h, H, W, d_v)


# One node in torch.fx graphs: the custom operator is opaque to symbolic tracing.
torch.fx.wrap("local_attention")


def sinusoidal_position_2d(channels: int, height: int, width: int, *, dtype=None, device=None) -> Tensor:
    """(channels, H, W) 2-D sinusoidal encoding: the first ⌊C/2⌋ channels encode the row, the rest the column.

    Within each half of n channels, channel j is sin (j even) or cos (j odd) of pos / 10000^(2⌊j/2⌋/n).
    """
    def axis(n, size):
        j = torch.arange(n, device=device, dtype=torch.float64)
        freq = torch.pow(10000.0, -2 * torch.div(j, 2, rounding_mode="floor") / max(n, 1))
        angle = freq[:, None] * torch.arange(size, device=device, dtype=torch.float64)[None]
        return torch.where((j % 2 == 0)[:, None], angle.sin(), angle.cos())   # (n, size)

    nr = channels // 2
    rows = axis(nr, height)[:, :, None].expand(nr, height, width)
    cols = axis(channels - nr, width)[:, None, :].expand(channels - nr, height, width)
    return torch.cat([rows, cols]).to(dtype or torch.get_default_dtype())


# -- the layers ---------------------------------------------------------------------------------

class _RelativeLogits(nn.Module):
    """Per-head row/column offset embeddings: half of each head's channels for rows, half for columns."""

    def __init__(self, heads: int, head_dim: int, offsets: int):
        super().__init__()
        self.split = head_dim // 2
        self.rel_row = nn.Parameter(torch.randn(heads, self.split, offsets) * head_dim ** -0.5)
        self.rel_col = nn.Parameter(torch.randn(heads, head_dim - self.split, offsets) * head_dim ** -0.5)

    def forward(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """q (..., heads, *, d) with heads at dim 1 → (q_rowᵀ r_u, q_colᵀ r_v): (B, heads, ..., offsets) each."""
        s = self.split
        q_row, q_col = q[..., :s], q[..., s:]
        # (B, heads, …, d/2) @ (heads, d/2, offsets) → (B, heads, …, offsets)
        shape = (1, q.shape[1]) + (1,) * (q.dim() - 4) + self.rel_row.shape[1:]
        return q_row @ self.rel_row.reshape(shape), q_col @ self.rel_col.reshape(shape)


def _check_query(module: str, query, height: int, width: int) -> tuple[int, int]:
    if query is None:
        return (height - 1) // 2, (width - 1) // 2
    if (not isinstance(query, (tuple, list)) or len(query) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in query)):
        raise TypeError(f"{module}: attention_query must be None or a pair of ints (row, col), got {query!r}")
    i, j = query
    if not (0 <= i < height and 0 <= j < width):
        raise ValueError(f"{module}: attention_query {tuple(query)} lies outside the {height}×{width} map")
    return i, j


class LocalSelfAttention2d(AttentionLayer):
    """SASA local self-attention (Ramachandran et al., NeurIPS 2019, eq. 3), a drop-in for a k×k conv.

    y_ij = ‖_heads Σ_{(a,b) ∈ N_k(i,j)} softmax_ab(q_ijᵀ k_ab + q_ijᵀ r_{a−i,b−j}) v_ab

    Args:
        in_channels, out_channels: d_in and d_out; W_Q, W_K, W_V are bias-free 1×1 projections
            d_in → d_out (the rows of ``qkv.weight``, in that order).
        kernel_size: the spatial extent k (the paper's default 7). It adds no parameters but the
            k relative offsets per axis.
        heads: attention heads N (8); out_channels must divide by it.
        stride: 1, or s > 1 for attention followed by s×s average pooling (the paper's downsampling;
            ceil mode, so odd sizes keep their last row).
        pos: "relative" (the paper's), "absolute" (2-D sinusoidal encoding added to the input of
            W_Q and W_K) or "none".
        logits: with ``pos="relative"``, which interactions form the logits: "both" (q·k + q·r,
            the paper's), "content" (q·k) or "position" (q·r; no W_K, ``qkv`` holds W_Q and W_V).

    ``keep_attention = True`` stores, in ``last_attention``, the attention of one query pixel,
    ``attention_query = (row, col)`` (default: the centre), over the input map: (B, heads, H, W),
    zero outside its window.
    """

    attention_query: tuple[int, int] | None = None

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 7, heads: int = 8, stride: int = 1,
                 pos: str = "relative", logits: str = "both"):
        super().__init__()
        name = type(self).__name__
        for arg, value in (("in_channels", in_channels), ("out_channels", out_channels),
                           ("kernel_size", kernel_size), ("heads", heads), ("stride", stride)):
            check_positive_int(name, arg, value)
        check_choice(name, "pos", pos, POS_MODES)
        check_choice(name, "logits", logits, LOGIT_MODES)
        if logits != "both" and pos != "relative":
            raise ValueError(f"{name}: logits={logits!r} ablates the relative term; "
                             f"it needs pos='relative', got {pos!r}")
        if out_channels % heads:
            raise ValueError(f"{name}: out_channels={out_channels} must be divisible by heads={heads}")
        head_dim = out_channels // heads
        if pos == "relative" and head_dim < 2:
            raise ValueError(f"{name}: relative embeddings split each head's channels between rows and columns; "
                             f"need out_channels/heads >= 2, got {head_dim}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.heads, self.head_dim, self.stride, self.pos, self.logits = heads, head_dim, stride, pos, logits
        self.qkv = nn.Conv2d(in_channels, (2 if logits == "position" else 3) * out_channels, 1, bias=False)
        relative = pos == "relative" and logits != "content"
        self.rel = _RelativeLogits(heads, head_dim, kernel_size) if relative else None
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, d_in, H, W) → q, k, v, each (B, heads, H, W, head_dim)."""
        B, _, H, W = x.shape
        if self.pos == "absolute":
            w_qk, w_v = self.qkv.weight.split([2 * self.out_channels, self.out_channels])
            pe = sinusoidal_position_2d(self.in_channels, H, W, dtype=x.dtype, device=x.device)
            qkv = torch.cat([F.conv2d(x + pe, w_qk), F.conv2d(x, w_v)], 1)
        else:
            qkv = self.qkv(x)
        n = qkv.shape[1] // self.out_channels
        qkv = qkv.reshape(B, n, self.heads, self.head_dim, H, W).permute(1, 0, 2, 4, 5, 3)  # (n, B, heads, H, W, d)
        # unbind, not indexing: backward then stacks the three gradients once instead of adding three zero-padded ones
        if self.logits == "position":  # no keys: q·k is zero and the logits are q·r alone
            q, v = qkv.unbind(0)
            return q, torch.zeros_like(q), v
        q, k, v = qkv.unbind(0)
        return q, k, v

    def forward(self, x: Tensor) -> Tensor:
        check_feature_map(type(self).__name__, x, self.in_channels)
        B, _, H, W = x.shape
        q, k, v = self._project(x)
        bias_row, bias_col = self.rel(q) if self.rel is not None else (None, None)   # (B, heads, H, W, k)
        y = local_attention(q, k, v, self.kernel_size, bias_row, bias_col)          # (B, heads, H, W, d)
        if self.keep_attention:
            self._keep(self._query_attention(q, k, bias_row, bias_col))
        y = y.permute(0, 1, 4, 2, 3).reshape(B, self.out_channels, H, W)
        return self.pool(y)

    def _query_attention(self, q, k, bias_row, bias_col) -> Tensor:
        """Attention of the query pixel over the map: (B, heads, H, W), zero outside its window."""
        B, heads, H, W, _ = q.shape
        i, j = _check_query(type(self).__name__, self.attention_query, H, W)
        c = (self.kernel_size - 1) // 2
        r0, r1 = max(0, i - c), min(H, i - c + self.kernel_size)
        c0, c1 = max(0, j - c), min(W, j - c + self.kernel_size)
        logits = torch.einsum("bhd,bhxyd->bhxy", q[:, :, i, j], k[:, :, r0:r1, c0:c1])
        if bias_row is not None:
            u = torch.arange(r0, r1, device=q.device) - i + c
            w = torch.arange(c0, c1, device=q.device) - j + c
            logits = logits + bias_row[:, :, i, j][..., u, None] + bias_col[:, :, i, j][..., None, w]
        attn = logits.flatten(2).softmax(-1).reshape(logits.shape)
        full = q.new_zeros(B, heads, H, W)
        full[:, :, r0:r1, c0:c1] = attn
        return full

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, heads={self.heads}, "
                f"stride={self.stride}, pos={self.pos!r}"
                + (f", logits={self.logits!r}" if self.logits != "both" else ""))


class SpatiallyAwareStem(AttentionLayer):
    """SASA's attention stem (Ramachandran et al., NeurIPS 2019, Sec. 3.2 and 4.1).

    Raw pixels are individually uninformative, so the values are made spatially aware:

        v_ab = (Σ_m p(a, b, m) W_V^m) x_ab,    p(a, b, m) = softmax_m((emb_row(a) + emb_col(b))ᵀ ν^m)

    with (a, b) the pixel's position in its block. As in the paper, the stem "performs
    self-attention within each k×k spatial block of the original image, followed by batch
    normalization and a k×k max pool" (k = 4): every pixel attends to the k² pixels of its own
    non-overlapping block (logits q_ijᵀk_ab, plus q_ijᵀ r_{a−i,b−j} for ``pos="relative"``),
    then BN and k×k/k max pooling give one output pixel per block. Images whose sides are not
    multiples of k get partial blocks at the edge; their missing pixels are masked out.

    Args:
        in_channels, out_channels: input channels (3) and the stem width (64).
        kernel_size: block side k (4); also the max-pool window and stride.
        mixtures: M, the number of value matrices W_V^m (4).
        heads: attention heads (1).
        pos: "relative", "absolute" or "none" as in :class:`LocalSelfAttention2d`.
        embed_dim: width of emb_row, emb_col and ν^m (default: out_channels).
        pool: apply BN and the max pool (True); False returns the attention output alone.

    ``keep_attention`` keeps the attention of ``attention_query`` (input pixel, default the centre)
    as (B, heads, H, W), zero outside its block.
    """

    attention_query: tuple[int, int] | None = None
    _offset: Tensor

    def __init__(self, in_channels: int = 3, out_channels: int = 64, kernel_size: int = 4, mixtures: int = 4,
                 heads: int = 1, pos: str = "relative", embed_dim: int | None = None, pool: bool = True):
        super().__init__()
        name = type(self).__name__
        for arg, value in (("in_channels", in_channels), ("out_channels", out_channels),
                           ("kernel_size", kernel_size), ("mixtures", mixtures), ("heads", heads)):
            check_positive_int(name, arg, value)
        check_choice(name, "pos", pos, POS_MODES)
        if out_channels % heads:
            raise ValueError(f"{name}: out_channels={out_channels} must be divisible by heads={heads}")
        embed_dim = check_positive_int(name, "embed_dim", embed_dim or out_channels)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.mixtures, self.heads, self.head_dim, self.pos = mixtures, heads, out_channels // heads, pos
        if pos == "relative" and self.head_dim < 2:
            raise ValueError(f"{name}: relative embeddings need out_channels/heads >= 2, got {self.head_dim}")
        self.qk = nn.Conv2d(in_channels, 2 * out_channels, 1, bias=False)
        self.value = nn.Parameter(torch.randn(mixtures, out_channels, in_channels) * in_channels ** -0.5)  # W_V^m
        self.emb_row = nn.Parameter(torch.randn(kernel_size, embed_dim) * embed_dim ** -0.5)
        self.emb_col = nn.Parameter(torch.randn(kernel_size, embed_dim) * embed_dim ** -0.5)
        self.emb_mix = nn.Parameter(torch.randn(mixtures, embed_dim) * embed_dim ** -0.5)   # ν^m
        self.rel = _RelativeLogits(heads, self.head_dim, 2 * kernel_size - 1) if pos == "relative" else None
        self.norm = nn.BatchNorm2d(out_channels) if pool else nn.Identity()
        self.pool = nn.MaxPool2d(kernel_size, kernel_size, ceil_mode=True) if pool else nn.Identity()
        offsets = torch.arange(kernel_size)
        self.register_buffer("_offset", offsets[None, :] - offsets[:, None] + kernel_size - 1,
                             persistent=False)   # (k, k): a − i + k − 1 for query offset i, key offset a

    def mixture_weights(self) -> Tensor:
        """p(a, b, m): (k, k, M), a softmax over the M value matrices for every block position."""
        logits = (self.emb_row[:, None, :] + self.emb_col[None, :, :]) @ self.emb_mix.t()   # (k, k, M)
        return logits.softmax(-1)

    def attend(self, x: Tensor) -> Tensor:
        """The block attention alone: (B, in, H, W) → (B, out, H, W)."""
        check_feature_map(type(self).__name__, x, self.in_channels)
        B, _, H, W = x.shape
        ks, heads, d = self.kernel_size, self.heads, self.head_dim
        nbh, nbw = -(-H // ks), -(-W // ks)
        x_qk = x + sinusoidal_position_2d(self.in_channels, H, W, dtype=x.dtype, device=x.device) \
            if self.pos == "absolute" else x
        pad = (0, nbw * ks - W, 0, nbh * ks - H)
        qk = F.pad(self.qk(x_qk), pad)
        # spatially-aware values: W_V(a, b) = Σ_m p(a, b, m) W_V^m, then v = W_V(a, b) x at block position (a, b)
        w_v = torch.einsum("abm,mon->abon", self.mixture_weights(), self.value)   # (k, k, out, in)
        xb = F.pad(x, pad).reshape(B, self.in_channels, nbh, ks, nbw, ks)
        v = torch.einsum("uvon,bnxuyv->bxyuvo", w_v, xb)                          # (B, nbh, nbw, k, k, out)
        v = v.reshape(B, nbh * nbw, ks * ks, heads, d).permute(0, 3, 1, 2, 4)     # (B, heads, blocks, k², d)
        qk = qk.reshape(B, 2, heads, d, nbh, ks, nbw, ks).permute(1, 0, 2, 4, 6, 5, 7, 3)
        q, k = qk.reshape(2, B, heads, nbh * nbw, ks * ks, d)                      # (B, heads, blocks, k², d)
        logits = q @ k.transpose(-1, -2)                                           # (B, heads, blocks, k², k²)
        if self.rel is not None:
            lr, lc = self.rel(q)                                                   # (B, heads, blocks, k², 2k−1)
            row_off = self._offset[:, None, :, None].expand(ks, ks, ks, ks).reshape(ks * ks, ks * ks)
            col_off = self._offset[None, :, None, :].expand(ks, ks, ks, ks).reshape(ks * ks, ks * ks)
            logits = logits + lr.gather(-1, row_off.expand(lr.shape[:-1] + row_off.shape[-1:])) \
                + lc.gather(-1, col_off.expand(lc.shape[:-1] + col_off.shape[-1:]))
        valid = F.pad(x.new_ones(H, W, dtype=torch.bool), pad).reshape(nbh, ks, nbw, ks).transpose(1, 2)
        logits = logits.masked_fill(~valid.reshape(nbh * nbw, 1, ks * ks), float("-inf"))
        attn = logits.softmax(-1)
        if self.keep_attention:
            self._keep(self._query_attention(attn, H, W))
        y = attn @ v                                                               # (B, heads, blocks, k², d)
        y = y.reshape(B, heads, nbh, nbw, ks, ks, d).permute(0, 1, 6, 2, 4, 3, 5)
        return y.reshape(B, self.out_channels, nbh * ks, nbw * ks)[:, :, :H, :W]

    def _query_attention(self, attn: Tensor, H: int, W: int) -> Tensor:
        ks = self.kernel_size
        i, j = _check_query(type(self).__name__, self.attention_query, H, W)
        nbw = -(-W // ks)
        block, pos = (i // ks) * nbw + j // ks, (i % ks) * ks + j % ks
        a = attn[:, :, block, pos].reshape(attn.shape[0], attn.shape[1], ks, ks)
        r0, c0 = (i // ks) * ks, (j // ks) * ks
        full = attn.new_zeros(attn.shape[0], attn.shape[1], H, W)
        full[:, :, r0:r0 + ks, c0:c0 + ks] = a[:, :, :min(ks, H - r0), :min(ks, W - c0)]
        return full

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.norm(self.attend(x)))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"mixtures={self.mixtures}, heads={self.heads}, pos={self.pos!r}")
