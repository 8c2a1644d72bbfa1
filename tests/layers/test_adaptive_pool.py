"""SelectAdaptivePool2d computes what timm's computes for every option."""
from __future__ import annotations

import pytest
import torch
from timm.layers import SelectAdaptivePool2d as TimmPool

from attnvision.layers import SelectAdaptivePool2d
from attnvision.layers.adaptive_pool import POOL_TYPES


@pytest.mark.parametrize("pool_type", POOL_TYPES)
def test_pool_computes_what_timms_selectadaptivepool2d_computes(pool_type):
    x = torch.randn(2, 6, 5, 7)
    ours, timms = SelectAdaptivePool2d(pool_type), TimmPool(pool_type=pool_type, flatten=bool(pool_type))  # timm heads never flatten the unpooled map
    torch.testing.assert_close(ours(x), timms(x))
    assert ours.feat_mult() == timms.feat_mult()


def test_pool_rejects_an_unknown_option():
    with pytest.raises(ValueError, match=r"SelectAdaptivePool2d: global_pool must be one of .*, got 'fast'"):
        SelectAdaptivePool2d("fast")
