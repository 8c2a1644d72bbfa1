"""The common unfold implementation of SASA attention, written independently of the library.

Keys and values of every k×k window are unfolded into (B, C·k², H·W) tensors, the logits
q·k + q_row·r_row + q_col·r_col are formed per window position, positions outside the image
are set to −∞ before the softmax. Used by the tests as the reference and by the benchmark as
the peer ("the common public implementation").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def unfold_local_attention(q, k, v, kernel_size, rel_row=None, rel_col=None):
    """q, k: (B, heads, d, H, W); v: (B, heads, dv, H, W); rel_*: (heads, d_*, k) → (B, heads·dv, H, W)."""
    B, h, d, H, W = q.shape
    dv = v.shape[2]
    ks = kernel_size
    c = (ks - 1) // 2
    pad = (c, ks - 1 - c, c, ks - 1 - c)
    kk = F.unfold(F.pad(k.reshape(B, h * d, H, W), pad), ks).view(B, h, d, ks * ks, H * W)
    vv = F.unfold(F.pad(v.reshape(B, h * dv, H, W), pad), ks).view(B, h, dv, ks * ks, H * W)
    inside = F.unfold(F.pad(q.new_ones(1, 1, H, W), pad), ks).view(ks * ks, H * W) > 0
    qf = q.reshape(B, h, d, 1, H * W)
    logits = (qf * kk).sum(2)                                      # (B, h, k², HW)
    if rel_row is not None:
        s = rel_row.shape[1]
        lr = torch.einsum("bhdn,hdu->bhun", qf[:, :, :s, 0], rel_row)
        lc = torch.einsum("bhdn,hdv->bhvn", qf[:, :, s:, 0], rel_col)
        logits = logits + (lr[:, :, :, None] + lc[:, :, None, :]).reshape(B, h, ks * ks, H * W)
    attn = logits.masked_fill(~inside, float("-inf")).softmax(2)   # (B, h, k², HW)
    out = (attn.unsqueeze(2) * vv).sum(3)                          # (B, h, dv, HW)
    return out.reshape(B, h * dv, H, W), attn.reshape(B, h, ks, ks, H, W)


def sinusoid_2d(channels, H, W, dtype):
    def axis(n, size):
        enc = torch.zeros(n, size, dtype=torch.float64)
        for j in range(n):
            freq = 10000.0 ** (-2 * (j // 2) / n)
            pos = torch.arange(size, dtype=torch.float64) * freq
            enc[j] = torch.sin(pos) if j % 2 == 0 else torch.cos(pos)
        return enc
    nr = channels // 2
    rows = axis(nr, H)[:, :, None].expand(nr, H, W)
    cols = axis(channels - nr, W)[:, None, :].expand(channels - nr, H, W)
    return torch.cat([rows, cols]).to(dtype)


def reference_layer(layer, x):
    """LocalSelfAttention2d's function computed the unfold way from the layer's own parameters."""
    B, _, H, W = x.shape
    C, h = layer.out_channels, layer.heads
    d = C // h
    wq, wk, wv = layer.qkv.weight.reshape(3, C, -1)
    x_qk = x + sinusoid_2d(x.shape[1], H, W, x.dtype) if layer.pos == "absolute" else x
    q = torch.einsum("oi,bihw->bohw", wq, x_qk).reshape(B, h, d, H, W)
    k = torch.einsum("oi,bihw->bohw", wk, x_qk).reshape(B, h, d, H, W)
    v = torch.einsum("oi,bihw->bohw", wv, x).reshape(B, h, d, H, W)
    rel = (layer.rel.rel_row, layer.rel.rel_col) if layer.pos == "relative" else (None, None)
    y, attn = unfold_local_attention(q, k, v, layer.kernel_size, *rel)
    if layer.stride > 1:
        y = F.avg_pool2d(y, layer.stride, layer.stride, ceil_mode=True)
    return y, attn
