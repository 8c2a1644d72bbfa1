import math

import pytest
import torch
import torch.nn.functional as F

import attnvision as av
from attnvision.layers import LKA, lka_cost
from attnvision.layers.lka import lka_receptive_field


def _input_gradient(lka: LKA, size: int) -> torch.Tensor:
    """|∂ out[centre] / ∂ x| summed over channels, (size, size)."""
    x = torch.randn(1, lka.dim, size, size, dtype=torch.float64, requires_grad=True)
    out = lka(x)
    out[0, :, size // 2, size // 2].sum().backward()
    return x.grad[0].abs().sum(0)


@pytest.mark.parametrize("kernel_size, dilation", [(21, 3), (7, 2), (14, 3), (28, 4), (12, 3)])
def test_receptive_field_is_exactly_the_decomposition_window(kernel_size, dilation):
    width = (2 * dilation - 1) + dilation * (math.ceil(kernel_size / dilation) - 1)
    assert lka_receptive_field(kernel_size, dilation) == width
    lka = LKA(4, kernel_size, dilation).double()
    for p in lka.parameters():  # no accidental zeros inside the window
        torch.nn.init.uniform_(p, 0.5, 1.5)
    size = width + 10
    grad = _input_gradient(lka, size)
    rows, cols = grad.nonzero(as_tuple=True)
    assert rows.max() - rows.min() + 1 == width and cols.max() - cols.min() + 1 == width
    top, left = rows.min().item(), cols.min().item()
    for r, c in [(top, left), (top, left + width - 1), (top + width - 1, left), (top + width - 1, left + width - 1)]:
        assert grad[r, c] > 0, f"corner ({r}, {c}) of the {width}×{width} window not reached"
    if kernel_size == 21:
        assert width == 23


def test_default_decomposition_is_5x5_then_7x7_dilated_3_then_1x1():
    lka = LKA(32)
    assert lka.conv_dw.kernel_size == (5, 5) and lka.conv_dw.groups == 32
    assert lka.conv_dw_dilated.kernel_size == (7, 7) and lka.conv_dw_dilated.dilation == (3, 3)
    assert lka.conv_pw.kernel_size == (1, 1) and lka.conv_pw.groups == 1


def test_output_is_attention_times_input_with_no_normalisation():
    lka = LKA(8).double()
    x = torch.randn(2, 8, 15, 11, dtype=torch.float64)
    attn = F.conv2d(x, lka.conv_dw.weight, lka.conv_dw.bias, padding=2, groups=8)
    attn = F.conv2d(attn, lka.conv_dw_dilated.weight, lka.conv_dw_dilated.bias, padding=9, dilation=3, groups=8)
    attn = F.conv2d(attn, lka.conv_pw.weight, lka.conv_pw.bias)
    lka.keep_attention = True
    out = lka(x)
    torch.testing.assert_close(out, x * attn, rtol=0, atol=1e-12)
    torch.testing.assert_close(lka.last_attention, attn, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kernel_size, dilation", [(21, 3), (7, 2), (12, 3), (28, 4)])
@pytest.mark.parametrize("size", [(13, 17), (8, 8), (1, 3)])
def test_keeps_height_and_width_and_matches_the_dilated_convolution(kernel_size, dilation, size):
    lka = LKA(6, kernel_size, dilation).double()
    x = torch.randn(2, 6, *size, dtype=torch.float64)
    attn = lka.conv_dw(x)
    if lka.pad is not None:  # odd extent: one more pixel at the bottom/right
        attn = F.pad(attn, lka.pad)
    attn = lka.conv_pw(lka.conv_dw_dilated(attn))
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        out = lka(inp)
        assert out.shape == x.shape
        torch.testing.assert_close(out, x * attn, rtol=0, atol=1e-12)


def test_odd_extent_is_padded_asymmetrically():
    assert LKA(4, 12, 3).pad == (4, 5, 4, 5)  # ⌈12/3⌉ = 4 taps dilated 3: extent 9
    assert LKA(4, 21, 3).pad is None


def test_lka_cost_matches_table_2_of_the_paper():
    cost = lka_cost(32, 21, 3)
    assert cost["params"] == 3392
    assert cost["standard"]["params"] == 451_584
    assert cost["mobilenet"]["params"] == 15_136
    assert lka_cost(32, 21, 3, bias=True)["params"] == 32 ** 2 + 77 * 32
    assert lka_cost(32, 21, 3, 14, 10)["macs"] == 3392 * 140


def test_dilation_3_minimises_parameters_for_k21():
    params = {d: lka_cost(64, 21, d)["params"] for d in range(1, 8)}
    assert min(params, key=params.get) == 3


@pytest.mark.parametrize("kernel_size, dilation, size", [(21, 3, (14, 14)), (7, 2, (9, 13)), (28, 4, (16, 12))])
def test_lka_cost_agrees_with_profile(kernel_size, dilation, size):
    with torch.device("meta"):
        lka = LKA(16, kernel_size, dilation)
    prof = av.profile(lka, (1, 16, *size))
    cost = lka_cost(16, kernel_size, dilation, *size, bias=True)
    assert prof.params == cost["params"] == sum(p.numel() for p in lka.parameters())
    assert prof.macs == cost["macs"] + cost["product_macs"]


def _convs(lka):
    return [c for c in (lka.conv_dw, lka.conv_dw_dilated, lka.conv_pw) if c is not None]


def test_ablation_switches_change_what_they_claim():
    x = torch.randn(2, 8, 12, 12, dtype=torch.float64)
    base = LKA(8).double()
    state = base.state_dict()

    def build(**kw):
        m = LKA(8, **kw).double()
        m.load_state_dict({k: v for k, v in state.items() if k in m.state_dict()})
        return m

    no_dw = build(dw_conv=False)
    assert no_dw.conv_dw is None
    a = no_dw.conv_pw(no_dw.conv_dw_dilated(x))
    torch.testing.assert_close(no_dw(x), x * a)

    no_dil = build(dilated_conv=False)
    assert no_dil.conv_dw_dilated is None
    torch.testing.assert_close(no_dil(x), x * no_dil.conv_pw(no_dil.conv_dw(x)))

    no_pw = build(pointwise=False)
    assert no_pw.conv_pw is None
    torch.testing.assert_close(no_pw(x), x * F.conv2d(no_pw.conv_dw(x), base.conv_dw_dilated.weight,
                                                      base.conv_dw_dilated.bias, padding=9, dilation=3, groups=8))

    attn = base.conv_pw(base.conv_dw_dilated(base.conv_dw(x)))
    torch.testing.assert_close(build(multiply=False)(x), attn)
    torch.testing.assert_close(build(sigmoid=True)(x), x * torch.sigmoid(attn))
    torch.testing.assert_close(base(x), x * attn)

    params = {name: sum(p.numel() for p in build(**{name: False}).parameters())
              for name in ("dw_conv", "dilated_conv", "pointwise")}
    full = sum(p.numel() for p in base.parameters())
    assert full - params["dw_conv"] == 8 * 25 + 8
    assert full - params["dilated_conv"] == 8 * 49 + 8
    assert full - params["pointwise"] == 8 * 8 + 8


def test_no_gradient_outside_the_window_without_the_dw_conv():
    lka = LKA(4, dw_conv=False).double()
    for p in lka.parameters():
        torch.nn.init.uniform_(p, 0.5, 1.5)
    grad = _input_gradient(lka, 30)
    rows, cols = grad.nonzero(as_tuple=True)
    assert rows.max() - rows.min() + 1 == 19 and cols.max() - cols.min() + 1 == 19  # 3·(7−1)+1


def test_create_attn_builds_lka():
    lka = av.create_attn("lka", 16, kernel_size=7, dilation=2)
    assert isinstance(lka, LKA) and lka.conv_dw.kernel_size == (3, 3) and lka.conv_dw_dilated.kernel_size == (4, 4)


def test_bad_arguments_name_the_module_and_the_value():
    with pytest.raises(ValueError, match=r"LKA: dilation must be a positive integer, got 0"):
        LKA(8, 21, 0)
    with pytest.raises(ValueError, match=r"LKA: .*keep at least one"):
        LKA(8, dw_conv=False, dilated_conv=False, pointwise=False)
    with pytest.raises(ValueError, match=r"LKA: expected 8 input channels, got 4"):
        LKA(8)(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match=r"lka_cost: kernel_size must be a positive integer"):
        lka_cost(8, 0, 3)


def _conv_dilations(graph) -> list:
    """The dilation of every conv2d call in a Dynamo or export graph (positional argument 5, default 1)."""
    return [tuple(n.args[5]) if len(n.args) > 5 else (1, 1) for n in graph.nodes
            if n.op == "call_function" and n.target in (torch.conv2d, torch.ops.aten.conv2d.default)]


def test_compile_takes_the_phase_split_and_export_keeps_the_dilated_conv():
    lka = LKA(8, 21, 3).eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 8, 12, 12).contiguous(memory_format=torch.channels_last)
    graphs = []

    def capture(gm, inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(lka, backend=capture, fullgraph=True)(x)
    torch.testing.assert_close(compiled, lka(x))
    assert _conv_dilations(graphs[0].graph) == [(1, 1), (1, 1), (1, 1)]  # the 3-dilated conv ran on phase grids
    exported = torch.export.export(lka, (x,))
    assert _conv_dilations(exported.graph) == [(1, 1), (3, 3), (1, 1)]
    torch.testing.assert_close(exported.module()(x), lka(x))
