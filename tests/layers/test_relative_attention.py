"""RelativeAttention2d: the bias is block-Toeplitz, pre/post/none match their formulas, other sizes and
checkpoints made at another size work."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from attnvision.layers import RelativeAttention2d, resize_relative_table
from attnvision.layers.relative_attention import relative_index


def _offset_table_value(table, h, w, i, j):
    (yi, xi), (yj, xj) = divmod(i, w), divmod(j, w)
    return table[:, yi - yj + h - 1, xi - xj + w - 1]


def _naive(layer: RelativeAttention2d, x: torch.Tensor) -> torch.Tensor:
    """The module docstring's formulas, position by position, from the layer's weights. x: (B, H, W, C)."""
    b, h, w, c = x.shape
    n, heads, d = h * w, layer.heads, layer.head_dim
    tokens = x.reshape(b, n, c)
    qkv = tokens @ layer.qkv.weight.T + layer.qkv.bias
    q, k, v = (qkv[..., s * heads * d:(s + 1) * heads * d].reshape(b, n, heads, d) for s in range(3))
    table = layer.relative_bias_table
    if table is not None and (h, w) != layer.input_size:
        table = resize_relative_table(table, (h, w))
    out = torch.zeros(b, n, heads, d, dtype=x.dtype)
    for bi, hd, i in itertools.product(range(b), range(heads), range(n)):
        logits = torch.stack([q[bi, i, hd] @ k[bi, j, hd] / d ** 0.5 for j in range(n)])
        bias = torch.stack([_offset_table_value(table, h, w, i, j)[hd] for j in range(n)]) if table is not None else 0
        if layer.rel == "pre":
            weights = torch.softmax(logits + bias, 0)
        elif layer.rel == "post":
            weights = torch.softmax(logits, 0) + bias
        else:
            weights = torch.softmax(logits, 0)
        out[bi, i, hd] = (weights[:, None] * v[bi, :, hd]).sum(0)
    out = out.reshape(b, n, heads * d) @ layer.proj.weight.T + layer.proj.bias
    return out.reshape(b, h, w, -1)


def _layer(rel="pre", size=(3, 4), dim=8, heads=2, **kw):
    layer = RelativeAttention2d(dim, size, heads=heads, rel=rel, **kw).double()
    if layer.relative_bias_table is not None:
        torch.nn.init.normal_(layer.relative_bias_table, std=0.5)  # large enough to matter
    return layer


def test_relative_bias_is_block_toeplitz_and_gathers_the_table():
    layer = _layer(size=(3, 4))
    bias = layer.relative_bias()
    table = layer.relative_bias_table
    n, w = 12, 4
    assert bias.shape == (2, n, n)
    by_offset = {}
    for i, j in itertools.product(range(n), range(n)):
        (yi, xi), (yj, xj) = divmod(i, w), divmod(j, w)
        torch.testing.assert_close(bias[:, i, j], _offset_table_value(table, 3, 4, i, j), rtol=0, atol=0)
        by_offset.setdefault((yi - yj, xi - xj), []).append(bias[:, i, j])
    assert len(by_offset) == 5 * 7  # every table entry is used
    for values in by_offset.values():
        for v in values:
            torch.testing.assert_close(v, values[0], rtol=0, atol=0)


def test_relative_index_covers_offsets_once_per_pair():
    index = relative_index(2, 3)
    assert index.shape == (6, 6)
    assert index.diagonal().eq(1 * 5 + 2).all()  # offset (0, 0) is the table's centre
    assert set(index.flatten().tolist()) == set(range(3 * 5))


@pytest.mark.parametrize("rel", ["pre", "post", "none"])
@pytest.mark.parametrize("fused", [True, False])
def test_pre_post_none_match_naive_float64_formulas(rel, fused):
    layer = _layer(rel).eval()
    layer.fused_attn = fused
    x = torch.randn(2, 3, 4, 8, dtype=torch.float64)
    torch.testing.assert_close(layer.forward_tokens(x), _naive(layer, x), rtol=1e-10, atol=1e-10)


def test_nchw_forward_equals_channels_last_forward():
    layer = _layer("pre", dim_out=16).eval()
    x = torch.randn(2, 8, 3, 4, dtype=torch.float64)
    y = layer(x)
    assert y.shape == (2, 16, 3, 4)
    torch.testing.assert_close(y, layer.forward_tokens(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


@pytest.mark.parametrize("rel", ["pre", "post"])
def test_fused_and_explicit_paths_give_the_same_gradients(rel):
    layer = _layer(rel).train()
    x = torch.randn(2, 3, 4, 8, dtype=torch.float64)
    grads = []
    for fused in (True, False):
        layer.zero_grad()
        layer.fused_attn = fused
        layer.forward_tokens(x).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in layer.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-9, atol=1e-10)
    assert grads[0]["relative_bias_table"].abs().sum() > 0


def test_kept_attention_is_the_pre_softmax_distribution():
    layer = _layer("pre").eval()
    layer.keep_attention = True
    x = torch.randn(1, 3, 4, 8, dtype=torch.float64)
    layer.forward_tokens(x)
    attn = layer.last_attention
    assert attn.shape == (1, 2, 12, 12)
    torch.testing.assert_close(attn.sum(-1), torch.ones(1, 2, 12, dtype=torch.float64))


def test_other_input_size_runs_on_the_interpolated_table():
    layer = _layer("pre", size=(4, 4)).eval()
    x = torch.randn(1, 6, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(layer.forward_tokens(x), _naive(layer, x), rtol=1e-10, atol=1e-10)
    bias = layer.relative_bias((6, 5))
    assert bias.shape == (2, 30, 30)


def test_resizing_keeps_a_constant_table_constant_and_its_own_size_unchanged():
    table = torch.full((3, 7, 7), 0.25, dtype=torch.float64)
    torch.testing.assert_close(resize_relative_table(table, (12, 6)), torch.full((3, 23, 11), 0.25,
                                                                                   dtype=torch.float64))
    rand = torch.randn(3, 7, 7)
    assert resize_relative_table(rand, (4, 4)) is rand
    expected = F.interpolate(rand[None], size=(11, 11), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(resize_relative_table(rand, 6), expected)


def test_state_dict_made_at_another_size_loads_resized():
    small = _layer("pre", size=(4, 4))
    large = _layer("pre", size=(6, 6))
    large.load_state_dict(small.state_dict())
    torch.testing.assert_close(large.relative_bias_table, resize_relative_table(small.relative_bias_table, 6))
    x = torch.randn(1, 6, 6, 8, dtype=torch.float64)
    torch.testing.assert_close(large.eval().forward_tokens(x), small.eval().forward_tokens(x))


def test_bad_arguments_and_inputs_raise_with_the_module_name():
    with pytest.raises(ValueError, match="RelativeAttention2d: rel"):
        RelativeAttention2d(8, 4, heads=2, rel="softmax")
    with pytest.raises(ValueError, match="RelativeAttention2d: dim_out=48 is not a multiple of head_dim=32"):
        RelativeAttention2d(8, 4, dim_out=48)
    with pytest.raises(ValueError, match="input_size"):
        RelativeAttention2d(8, (4, 4, 4), heads=2)
    layer = RelativeAttention2d(8, 4, heads=2)
    with pytest.raises(ValueError, match=r"expected channels-last maps \(B, H, W, 8\)"):
        layer.forward_tokens(torch.randn(1, 4, 4, 6))
    with pytest.raises(ValueError, match="no relative bias"):
        RelativeAttention2d(8, 4, heads=2, rel="none").relative_bias()
