"""SelectAdaptivePool2d computes what timm's computes for every option."""
from __future__ import annotations

import pytest
import torch
from timm.layers import SelectAdaptivePool2d as TimmPool

from attnvision.layers import SelectAdaptivePool2d
from attnvision.layers.adaptive_pool import POOL_TYPES, channel_max, global_max


@pytest.mark.parametrize("pool_type", POOL_TYPES)
def test_pool_computes_what_timms_selectadaptivepool2d_computes(pool_type):
    x = torch.randn(2, 6, 5, 7)
    # timm heads never flatten the unpooled map
    ours, timms = SelectAdaptivePool2d(pool_type), TimmPool(pool_type=pool_type, flatten=bool(pool_type))
    torch.testing.assert_close(ours(x), timms(x))
    assert ours.feat_mult() == timms.feat_mult()


def test_pool_rejects_an_unknown_option():
    with pytest.raises(ValueError, match=r"SelectAdaptivePool2d: global_pool must be one of .*, got 'fast'"):
        SelectAdaptivePool2d("fast")


def test_maxima_send_each_gradient_to_one_position_as_max_pooling():
    x = torch.ones(2, 3, 4, 5, requires_grad=True)  # every position ties
    global_max(x).mul(torch.arange(6.0).reshape(2, 3)).sum().backward()
    ref = torch.ones(2, 3, 4, 5, requires_grad=True)
    torch.nn.functional.max_pool2d(ref, (4, 5)).flatten(1).mul(torch.arange(6.0).reshape(2, 3)).sum().backward()
    assert torch.equal(x.grad, ref.grad)  # the CBAM authors' F.max_pool2d
    assert (x.grad != 0).sum() == 5 and torch.equal(x.grad.sum((2, 3)), torch.arange(6.0).reshape(2, 3))
    c = torch.ones(2, 3, 4, 5, requires_grad=True)
    channel_max(c).sum().backward()
    assert torch.equal(c.grad.sum(1), torch.ones(2, 4, 5)) and (c.grad != 0).sum() == 2 * 4 * 5  # one channel each
    y = torch.randn(2, 3, 4, 5)
    for z in (y, y.contiguous(memory_format=torch.channels_last), y.clone().requires_grad_()):
        torch.testing.assert_close(global_max(z), y.amax((2, 3)), rtol=0, atol=0)  # amax without a gradient
        torch.testing.assert_close(channel_max(z), y.amax(1, keepdim=True), rtol=0, atol=0)
