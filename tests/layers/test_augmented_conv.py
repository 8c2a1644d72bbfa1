"""AAConv2d's position-encoding switch (Bello et al. 2019, Sec. 4.5): relative, sine, CoordConv, none."""
from __future__ import annotations

import math

import pytest
import torch

import attnvision as av
from attnvision.layers import AAConv2d


def _layer(pos, **kw):
    torch.manual_seed(0)
    return AAConv2d(8, 16, dk=8, dv=8, heads=2, input_size=6, pos_encoding=pos, **kw).double().eval()


def _attn_input(layer, x):
    """The tensor the q/k/v projection reads."""
    seen = []
    handle = layer.qkv.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    layer(x)
    handle.remove()
    return seen[0]


def test_default_is_relative_and_only_relative_has_tables():
    assert AAConv2d(8, 16, dk=8, dv=8, heads=2).pos_encoding == "relative"
    for pos in ("relative", "sine", "coord", "none"):
        assert (_layer(pos).rel is not None) == (pos == "relative")


def test_none_logits_are_the_content_logits_only():
    layer = _layer("none")
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    _, logits = layer(x, return_logits=True)
    q, k, _ = layer.qkv(x).flatten(2).split([8, 8, 8], 1)
    q = q.reshape(2, 2, 4, 30).transpose(2, 3) / math.sqrt(4)
    k = k.reshape(2, 2, 4, 30).transpose(2, 3)
    torch.testing.assert_close(logits, q @ k.transpose(-2, -1))
    relative = _layer("relative")
    relative.load_state_dict(layer.state_dict(), strict=False)
    _, rel_logits = relative(x, return_logits=True)
    assert not torch.allclose(rel_logits, logits)


def test_sine_adds_row_and_column_sinusoids_to_the_attention_input_only():
    sine, plain = _layer("sine"), _layer("none")
    plain.load_state_dict(sine.state_dict())
    assert sum(p.numel() for p in sine.parameters()) == sum(p.numel() for p in plain.parameters())
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    pe = _attn_input(sine, x) - x  # (B, 8, 5, 6): channels 0-3 encode the row, 4-7 the column
    i, j = torch.arange(5, dtype=torch.float64), torch.arange(6, dtype=torch.float64)
    torch.testing.assert_close(pe[0, 0], torch.sin(i)[:, None].expand(5, 6))        # row, frequency 1
    torch.testing.assert_close(pe[1, 1], torch.cos(i)[:, None].expand(5, 6))
    torch.testing.assert_close(pe[0, 4], torch.sin(j)[None, :].expand(5, 6))        # column, frequency 1
    torch.testing.assert_close(pe[0, 6], torch.sin(j / 100)[None, :].expand(5, 6))  # 10000^(−2/4)
    out = sine(x)
    torch.testing.assert_close(out[:, :8], plain(x)[:, :8])        # the convolution reads x itself
    torch.testing.assert_close(out[:, 8:], plain(x + pe)[:, 8:])   # the attention reads x + PE


def test_coord_concatenates_x_y_r_channels_to_the_attention_input():
    coord, plain = _layer("coord"), _layer("none")
    assert coord.qkv.in_channels == 8 + 3
    extra = sum(p.numel() for p in coord.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 3 * (8 + 8 + 8)  # three more input channels of the q/k/v projection
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    seen = _attn_input(coord, x)
    assert seen.shape == (2, 11, 5, 6)
    torch.testing.assert_close(seen[:, :8], x)
    for row in range(5):
        for col in range(6):
            xc, yc = -1 + 2 * col / 5, -1 + 2 * row / 4
            expected = torch.tensor([xc, yc, math.hypot(xc, yc)], dtype=torch.float64)
            torch.testing.assert_close(seen[1, 8:, row, col], expected)
    torch.testing.assert_close(coord(x)[:, :8], coord.conv(x))


def test_every_encoding_runs_with_stride_downsample_and_evolve():
    for pos in ("relative", "sine", "coord", "none"):
        m = AAConv2d(8, 16, dk=8, dv=8, heads=2, stride=2, input_size=8, downsample=True, evolve=True,
                     pos_encoding=pos)
        out, logits = m(torch.randn(2, 8, 8, 8))
        assert out.shape == (2, 16, 4, 4) and logits.shape == (2, 2, 4, 4)


def test_bad_position_encodings_raise_clear_errors():
    with pytest.raises(ValueError, match="AAConv2d: pos_encoding must be one of"):
        AAConv2d(8, 16, dk=8, dv=8, heads=2, pos_encoding="learned")
    with pytest.raises(ValueError, match="AAConv2d: pos_encoding='sine' needs in_channels divisible by 4"):
        AAConv2d(6, 16, dk=8, dv=8, heads=2, pos_encoding="sine")
    with pytest.raises(ValueError, match="AAConv2d: the sine table covers attention maps up to 6×6, got a 7×7"):
        _layer("sine")(torch.randn(1, 8, 7, 7, dtype=torch.float64))


@pytest.mark.parametrize("pos", ["sine", "coord", "none"])
def test_aa_resnet_passes_the_encoding_to_every_aa_layer(pos):
    with torch.device("meta"):
        base = av.create_model("aa_resnet34")
        model = av.create_model("aa_resnet34", pos_encoding=pos)
    layers = [m for m in model.modules() if isinstance(m, AAConv2d)]
    assert layers and all(m.pos_encoding == pos for m in layers)
    tables = sum(p.numel() for m in base.modules() if isinstance(m, AAConv2d) for p in m.rel.parameters())
    coords = sum(3 * m.qkv.out_channels for m in layers) if pos == "coord" else 0
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in base.parameters()) - tables + coords
