"""pointwise_conv2d / PointwiseConv2d: F.conv2d's outputs and gradients on the row view and on every fallback."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnvision.inference import fold_batchnorm
from attnvision.layers.mlp import MapLinear
from attnvision.layers.pointwise import PointwiseConv2d, _rows_take_onednn, pointwise_conv2d


@pytest.fixture
def threads():
    """Set the intra-op thread count for one test and restore it after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _cl(*shape):
    return torch.randn(*shape).contiguous(memory_format=torch.channels_last)


def _grads(fn, x, weight, bias):
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    y = fn(*leaves)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1)))
    return y, [t.grad for t in leaves]


@pytest.mark.parametrize("shape", [(2, 8, 8, 5), (1, 16, 16, 3), (3, 4, 7, 7)])
def test_row_view_matches_conv2d_outputs_and_gradients(threads, shape):
    threads(1)
    x, weight, bias = _cl(*shape), torch.randn(6, shape[1], 1, 1), torch.randn(6)
    assert _rows_take_onednn(x, weight)  # B < 16 <= B·H at one thread: the path under test is taken
    y, grads = _grads(pointwise_conv2d, x, weight, bias)
    ref, ref_grads = _grads(lambda a, w, b: F.conv2d(a, w, b), x, weight, bias)
    torch.testing.assert_close(y, ref)
    assert y.is_contiguous(memory_format=torch.channels_last)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", ["nchw", "two_threads", "batch_16", "few_rows", "float64", "3x3"])
def test_fallbacks_are_conv2d(threads, case):
    threads(2 if case == "two_threads" else 1)
    x = {"nchw": torch.randn(2, 8, 8, 8), "batch_16": _cl(16, 8, 4, 4), "few_rows": _cl(2, 8, 7, 4),
         "float64": _cl(2, 8, 8, 8).double()}.get(case, _cl(2, 8, 8, 8))
    weight = torch.randn(6, 8, 3 if case == "3x3" else 1, 3 if case == "3x3" else 1, dtype=x.dtype)
    assert not _rows_take_onednn(x, weight)
    torch.testing.assert_close(pointwise_conv2d(x, weight), F.conv2d(x, weight), rtol=0, atol=0)


def test_module_is_a_conv2d_with_the_same_parameters(threads):
    threads(1)
    conv = PointwiseConv2d(8, 12, bias=True)
    plain = nn.Conv2d(8, 12, 1)
    plain.load_state_dict(conv.state_dict())
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
    x = _cl(2, 8, 8, 8)
    torch.testing.assert_close(conv(x), plain(x))
    strided = PointwiseConv2d(8, 12, stride=2, bias=False)
    torch.testing.assert_close(strided(x), F.conv2d(x, strided.weight, stride=2))


def test_traced_graph_records_the_plain_convolution():
    gm = torch.fx.symbolic_trace(nn.Sequential(PointwiseConv2d(4, 4)))
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"] == [F.conv2d]


def test_batchnorm_folds_into_it():
    model = nn.Sequential(PointwiseConv2d(4, 6, bias=False), nn.BatchNorm2d(6)).eval()
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    x = _cl(2, 4, 8, 8)
    ref = model(x)
    assert fold_batchnorm(model) == [("0", "1")]
    assert type(model[0]) is PointwiseConv2d and isinstance(model[1], nn.Identity)
    torch.testing.assert_close(model(x), ref)


def test_map_linear_on_one_thread_matches_linear(threads):
    threads(1)
    lin = MapLinear(8, 5)
    x = _cl(2, 8, 8, 6).permute(0, 2, 3, 1)  # (B, H, W, C) view of a channels-last map
    assert _rows_take_onednn(x.permute(0, 3, 1, 2), lin.weight[:, :, None, None])
    torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias))
