"""LocalSelfAttention2d and SpatiallyAwareStem against independent references, and their properties."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from attnvision import profile
from attnvision.layers import LocalSelfAttention2d, SpatiallyAwareStem
from attnvision.layers.local_attention import local_attention

la_module = sys.modules["attnvision.layers.local_attention"]

sys.path.insert(0, str(Path(__file__).parent))
from sasa_reference import reference_layer  # noqa: E402 (importable only after the sys.path entry above)


def _grads(out, inputs, seed_grad):
    return torch.autograd.grad(out, inputs, seed_grad)


# (in, out, H, W, k, heads, stride, pos): many sizes, even and odd kernels, images smaller than the window
CASES = [
    (6, 16, 9, 11, 7, 2, 1, "relative"),
    (6, 16, 3, 2, 7, 2, 1, "relative"),
    (4, 8, 13, 10, 5, 1, 2, "absolute"),
    (4, 12, 20, 17, 11, 3, 1, "none"),
    (4, 8, 1, 1, 3, 2, 1, "relative"),
    (5, 8, 6, 9, 4, 2, 3, "relative"),
    (3, 8, 5, 5, 9, 4, 2, "absolute"),
    (4, 16, 8, 3, 1, 2, 1, "relative"),
    (4, 8, 7, 15, 6, 1, 1, "none"),
    (4, 8, 2, 12, 7, 2, 2, "relative"),
]


@pytest.mark.parametrize("cin,cout,H,W,k,heads,stride,pos", CASES)
def test_output_and_gradients_match_unfold_reference_float64(cin, cout, H, W, k, heads, stride, pos):
    layer = LocalSelfAttention2d(cin, cout, k, heads, stride, pos).double()
    x = torch.randn(2, cin, H, W, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    y_ref, _ = reference_layer(layer, x)
    assert y.shape == y_ref.shape == (2, cout, math.ceil(H / stride), math.ceil(W / stride))
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    g = torch.randn_like(y)
    inputs = [x, *layer.parameters()]
    for a, b in zip(_grads(y, inputs, g), _grads(y_ref, inputs, g)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cin,cout,H,W,k,heads,stride,pos", CASES[:6])
def test_output_and_gradients_match_unfold_reference_float32(cin, cout, H, W, k, heads, stride, pos):
    layer = LocalSelfAttention2d(cin, cout, k, heads, stride, pos)
    x = torch.randn(2, cin, H, W, requires_grad=True)
    y = layer(x)
    y_ref, _ = reference_layer(layer, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    inputs = [x, *layer.parameters()]
    for a, b in zip(_grads(y, inputs, g), _grads(y_ref, inputs, g)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tile", [1, 2, 3, 4, 6, 16])
def test_kernel_is_independent_of_tile_and_chunk_size(monkeypatch, tile):
    monkeypatch.setattr(la_module, "_CHUNK_CPU", 1500)   # many chunks, over rows and over batch·heads
    _assert_kernel_matches_reference((2, 3, 11, 9, 4), 5, tile)


@pytest.mark.parametrize("shape,k,tile", [((1, 1, 1, 1, 2), 3, 3), ((1, 2, 2, 5, 4), 5, 3), ((2, 1, 7, 3, 3), 3, 4)])
def test_kernel_on_maps_smaller_than_a_tile(shape, k, tile):
    # a map of one tile or less on a side; one image and head of one pixel, where the row and column offset
    # gradients are whole halves of one (…, 2k) map (the operator must still return them as separate tensors)
    _assert_kernel_matches_reference(shape, k, tile)


def _assert_kernel_matches_reference(shape, k, tile):
    """Output and gradients of :func:`local_attention` with row/column offset logits, float64, against the
    unfold-style reference, for q, k, v of ``shape`` (B, heads, H, W, d)."""
    q, k_, v = (torch.randn(*shape, dtype=torch.float64, requires_grad=True) for _ in range(3))
    br, bc = (torch.randn(*shape[:-1], k, dtype=torch.float64, requires_grad=True) for _ in range(2))
    y = local_attention(q, k_, v, k, br, bc, tile=tile)
    ref = _reference_with_bias(q, k_, v, br, bc, k)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-10)
    g = torch.randn_like(y)
    for a, b in zip(_grads(y, [q, k_, v, br, bc], g), _grads(ref, [q, k_, v, br, bc], g)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def _reference_with_bias(q, k, v, br, bc, ks):
    """softmax(q·k + br[u] + bc[v]) v over each window, the unfold way, written out directly."""
    B, h, H, W, d = q.shape
    c = (ks - 1) // 2
    pad = (0, 0, c, ks - 1 - c, c, ks - 1 - c)
    kp, vp = F.pad(k, pad), F.pad(v, pad)
    inside = F.pad(torch.ones(H, W, dtype=torch.bool), (c, ks - 1 - c, c, ks - 1 - c))
    logits, values, valid = [], [], []
    for u in range(ks):
        for w in range(ks):
            logits.append((q * kp[:, :, u:u + H, w:w + W]).sum(-1) + br[..., u] + bc[..., w])
            values.append(vp[:, :, u:u + H, w:w + W])
            valid.append(inside[u:u + H, w:w + W])
    logits = torch.stack(logits, -1).masked_fill(~torch.stack(valid, -1), float("-inf"))
    return torch.einsum("bhijo,bhijod->bhijd", logits.softmax(-1), torch.stack(values, -2))


def test_without_bias_matches_reference_and_rejects_half_a_bias():
    q, k, v = (torch.randn(1, 2, 6, 7, 3, dtype=torch.float64) for _ in range(3))
    zeros = torch.zeros(1, 2, 6, 7, 3, dtype=torch.float64)
    torch.testing.assert_close(local_attention(q, k, v, 3), _reference_with_bias(q, k, v, zeros, zeros, 3),
                               rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="local_attention"):
        local_attention(q, k, v, 3, zeros, None)


@pytest.mark.parametrize("pos", ["relative", "absolute", "none"])
def test_output_pixel_depends_only_on_its_window(pos):
    k, H, W = 5, 12, 13
    layer = LocalSelfAttention2d(4, 8, k, 2, pos=pos).double()
    for i, j in [(0, 0), (6, 7), (11, 3)]:
        x = torch.randn(1, 4, H, W, dtype=torch.float64, requires_grad=True)
        layer(x)[0, :, i, j].sum().backward()
        touched = x.grad.abs().sum(1)[0] > 0
        window = torch.zeros(H, W, dtype=torch.bool)
        window[max(0, i - 2):i + 3, max(0, j - 2):j + 3] = True
        assert not touched[~window].any()
        assert touched[window].all()


@pytest.mark.parametrize("pos", ["relative", "absolute", "none"])
def test_padding_is_masked_so_a_1x1_image_gives_the_value_projection(pos):
    layer = LocalSelfAttention2d(5, 8, 7, 2, pos=pos).double()
    x = torch.randn(3, 5, 1, 1, dtype=torch.float64)
    w_v = layer.qkv.weight[16:]
    torch.testing.assert_close(layer(x), F.conv2d(x, w_v), rtol=0, atol=1e-12)
    a, b, x2 = 0.3, -1.7, torch.randn_like(x)
    torch.testing.assert_close(layer(a * x + b * x2), a * layer(x) + b * layer(x2), rtol=0, atol=1e-12)


@pytest.mark.parametrize("pos", ["relative", "none"])
def test_translation_equivariant_where_windows_stay_inside(pos):
    k, c = 5, 2
    layer = LocalSelfAttention2d(4, 8, k, 2, pos=pos).double()
    big = torch.randn(1, 4, 20, 22, dtype=torch.float64)
    dy, dx = 3, 2
    y1 = layer(big[:, :, :16, :18])
    y2 = layer(big[:, :, dy:dy + 16, dx:dx + 18])
    # pixel (i, j) of crop 2 is pixel (i+dy, j+dx) of crop 1; compare where both windows are inside both crops
    inner1 = y1[:, :, c + dy:16 - c, c + dx:18 - c]
    inner2 = y2[:, :, c:16 - c - dy, c:18 - c - dx]
    torch.testing.assert_close(inner1, inner2, rtol=0, atol=1e-12)


def test_absolute_positions_break_translation_equivariance():
    layer = LocalSelfAttention2d(4, 8, 3, 2, pos="absolute").double()
    big = torch.randn(1, 4, 12, 12, dtype=torch.float64)
    y1, y2 = layer(big[:, :, :10, :10]), layer(big[:, :, 1:11, 1:11])
    assert (y1[:, :, 3:8, 3:8] - y2[:, :, 2:7, 2:7]).abs().max() > 1e-3


def test_keep_attention_gives_the_query_pixels_weights_over_the_image():
    layer = LocalSelfAttention2d(4, 8, 5, 2).double()
    x = torch.randn(2, 4, 9, 10, dtype=torch.float64)
    layer.keep_attention = True
    layer.attention_query = (1, 7)
    y = layer(x)
    amap = layer.last_attention
    assert amap.shape == (2, 2, 9, 10)
    _, attn = reference_layer(layer, x)              # (B, heads, k, k, H, W)
    window = amap[:, :, 0:4, 5:10]                    # rows −1..3 clipped to 0..3, cols 5..9
    torch.testing.assert_close(window, attn[:, :, 1:, :, 1, 7], rtol=0, atol=1e-12)
    torch.testing.assert_close(amap.sum((2, 3)), torch.ones(2, 2, dtype=torch.float64), rtol=0, atol=1e-12)
    v = F.conv2d(x, layer.qkv.weight[16:]).reshape(2, 2, 4, 9, 10)
    torch.testing.assert_close(torch.einsum("bhxy,bhdxy->bhd", amap, v).reshape(2, 8), y[:, :, 1, 7],
                               rtol=0, atol=1e-12)
    layer.keep_attention = False
    layer.last_attention = None
    layer(x)
    assert layer.last_attention is None


def test_bad_arguments_raise_with_the_module_name():
    with pytest.raises(ValueError, match="LocalSelfAttention2d.*heads"):
        LocalSelfAttention2d(8, 10, heads=4)
    with pytest.raises(ValueError, match="LocalSelfAttention2d.*pos"):
        LocalSelfAttention2d(8, 8, pos="sinusoid")
    with pytest.raises(ValueError, match="LocalSelfAttention2d.*kernel_size"):
        LocalSelfAttention2d(8, 8, kernel_size=0)
    with pytest.raises(ValueError, match="LocalSelfAttention2d.*out_channels/heads"):
        LocalSelfAttention2d(8, 8, heads=8, pos="relative")
    layer = LocalSelfAttention2d(4, 8, 3, 2)
    with pytest.raises(ValueError, match="LocalSelfAttention2d.*4 input channels, got 5"):
        layer(torch.randn(1, 5, 6, 6))
    with pytest.raises(ValueError, match="LocalSelfAttention2d.*4-D"):
        layer(torch.randn(4, 6, 6))
    layer.keep_attention, layer.attention_query = True, (6, 0)
    with pytest.raises(ValueError, match="outside the 6×6 map"):
        layer(torch.randn(1, 4, 6, 6))


def test_compiles_in_one_graph_with_the_same_values_and_gradients():
    layer = LocalSelfAttention2d(4, 8, 5, 2, stride=2).double()
    x = torch.randn(2, 4, 9, 11, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    y, y_c = layer(x), compiled(x)
    torch.testing.assert_close(y_c, y, rtol=0, atol=1e-12)
    g = torch.randn_like(y)
    for a, b in zip(_grads(y_c, [x, *layer.parameters()], g), _grads(y, [x, *layer.parameters()], g)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_custom_operator_passes_opcheck():
    q, k, v = (torch.randn(1, 2, 5, 7, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    br, bc = (torch.randn(1, 2, 5, 7, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    torch.library.opcheck(torch.ops.attnvision.local_attention.default, (q, k, v, br, bc, 3, 2))
    torch.library.opcheck(torch.ops.attnvision.local_attention.default, (q, k, v, None, None, 3, 4))
    # the backward op on inputs of other strides (a layer's q, k, v are views of one projection):
    # its fake kernel must give the strides the real one returns, or inductor's stride asserts fail
    qkv = torch.randn(1, 2, 5, 7, 9, dtype=torch.float64)
    q, k, v = qkv.permute(0, 1, 3, 2, 4).contiguous().permute(0, 1, 3, 2, 4).split(3, dim=-1)
    out = torch.ops.attnvision.local_attention.default(q, k, v, br, bc, 3, 2).detach()
    torch.library.opcheck(torch.ops.attnvision.local_attention_backward.default,
                          (torch.randn_like(out), q, k, v, br.detach(), bc.detach(), out, 3, 2))


def test_profiler_counts_the_window_multiply_adds():
    B, C, H, W, k, heads = 2, 16, 10, 12, 7, 4
    layer = LocalSelfAttention2d(C, C, k, heads, pos="none")
    p = profile(layer, (B, C, H, W))
    assert p.by_op["attnvision.local_attention"] == B * H * W * k * k * 2 * C   # q·k and attn·v over k² keys
    assert p.by_op["convolution"] == B * H * W * C * 3 * C
    with torch.device("meta"):
        meta = LocalSelfAttention2d(C, C, k, heads)
    assert profile(meta, (B, C, H, W)).by_op["attnvision.local_attention"] == B * H * W * k * k * 2 * C


# -- the attention stem -------------------------------------------------------------------------

def _stem_reference(stem, x):
    """The stem's block attention, pixel by pixel, in plain loops."""
    B, cin, H, W = x.shape
    ks, heads, d = stem.kernel_size, stem.heads, stem.head_dim
    wq, wk = stem.qk.weight.reshape(2, stem.out_channels, cin)
    q = torch.einsum("oi,bihw->bohw", wq, x).reshape(B, heads, d, H, W)
    k = torch.einsum("oi,bihw->bohw", wk, x).reshape(B, heads, d, H, W)
    mix = ((stem.emb_row[:, None] + stem.emb_col[None]) @ stem.emb_mix.t()).softmax(-1)   # (k, k, M)
    out = torch.zeros(B, stem.out_channels, H, W, dtype=x.dtype)
    s = d // 2
    for i in range(H):
        for j in range(W):
            r0, c0 = (i // ks) * ks, (j // ks) * ks
            keys = [(a, b) for a in range(r0, min(r0 + ks, H)) for b in range(c0, min(c0 + ks, W))]
            logits = []
            for a, b in keys:
                lg = (q[:, :, :, i, j] * k[:, :, :, a, b]).sum(-1)
                if stem.pos == "relative":
                    lg = lg + (q[:, :, :s, i, j] * stem.rel.rel_row[:, :, a - i + ks - 1]).sum(-1) \
                        + (q[:, :, s:, i, j] * stem.rel.rel_col[:, :, b - j + ks - 1]).sum(-1)
                logits.append(lg)
            attn = torch.stack(logits, -1).softmax(-1)   # (B, heads, n)
            for n, (a, b) in enumerate(keys):
                w_v = torch.einsum("m,moi->oi", mix[a - r0, b - c0], stem.value)
                v = (w_v @ x[:, :, a, b].t()).t().reshape(B, heads, d)
                out[:, :, i, j] += (attn[:, :, n, None] * v).reshape(B, -1)
    return out


@pytest.mark.parametrize("H,W,heads,pos", [(8, 8, 1, "relative"), (6, 7, 2, "relative"), (5, 3, 1, "none"),
                                           (2, 2, 2, "relative")])
def test_stem_matches_pixel_by_pixel_reference(H, W, heads, pos):
    stem = SpatiallyAwareStem(3, 8, kernel_size=4, mixtures=3, heads=heads, pos=pos).double()
    x = torch.randn(2, 3, H, W, dtype=torch.float64)
    torch.testing.assert_close(stem.attend(x), _stem_reference(stem, x), rtol=0, atol=1e-10)


def test_stem_mixture_weights_are_a_distribution_and_output_is_pooled_per_block():
    stem = SpatiallyAwareStem(3, 16).double()
    p = stem.mixture_weights()
    assert p.shape == (4, 4, 4)
    torch.testing.assert_close(p.sum(-1), torch.ones(4, 4, dtype=torch.float64), rtol=0, atol=1e-12)
    stem.eval()
    x = torch.randn(2, 3, 18, 16, dtype=torch.float64)
    y = stem(x)
    assert y.shape == (2, 16, 5, 4)
    torch.testing.assert_close(y, F.max_pool2d(stem.norm(stem.attend(x)), 4, 4, ceil_mode=True), rtol=0, atol=0)


def test_stem_attends_only_within_the_block():
    stem = SpatiallyAwareStem(3, 8, heads=2).double()
    x = torch.randn(1, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    stem.attend(x)[0, :, 5, 9].sum().backward()
    touched = x.grad.abs().sum(1)[0] > 0
    block = torch.zeros(12, 12, dtype=torch.bool)
    block[4:8, 8:12] = True
    assert touched[block].all() and not touched[~block].any()
    stem.keep_attention, stem.attention_query = True, (5, 9)
    stem.attend(x.detach())
    amap = stem.last_attention
    assert amap.shape == (1, 2, 12, 12)
    assert (amap[:, :, ~block] == 0).all()
    torch.testing.assert_close(amap.sum((2, 3)), torch.ones(1, 2, dtype=torch.float64), rtol=0, atol=1e-12)


def test_stem_rejects_bad_arguments():
    with pytest.raises(ValueError, match="SpatiallyAwareStem.*mixtures"):
        SpatiallyAwareStem(3, 8, mixtures=0)
    with pytest.raises(ValueError, match="SpatiallyAwareStem.*3 input channels, got 1"):
        SpatiallyAwareStem(3, 8)(torch.randn(1, 1, 8, 8))
