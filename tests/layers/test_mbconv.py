"""MBConv (CoAtNet's): widths, the pooled and projected shortcut, where the stride sits; SE's rd_channels."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnvision.layers import SE, MBConv


def _mbconv_params(cin, cout, expand=4, se_ratio=0.25):
    mid, rd = cout * expand, int(cout * se_ratio)
    shortcut = cin * cout + cout if cin != cout else 0
    return (shortcut + 2 * cin + cin * mid + 2 * mid + 9 * mid + 2 * mid
            + (mid * rd + rd + rd * mid + mid) + mid * cout + cout)


@pytest.mark.parametrize("cin,cout", [(16, 16), (16, 24)])
def test_parameter_count_matches_the_block_formula(cin, cout):
    block = MBConv(cin, cout)
    assert sum(p.numel() for p in block.parameters()) == _mbconv_params(cin, cout)
    assert block.se.fc1.out_features == cout // 4  # SE sized from the output width
    assert block.conv2.groups == block.conv2.in_channels == 4 * cout


def test_identity_block_is_residual_and_residual_branch_is_the_paper_order():
    block = MBConv(8, 8).eval().double()
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    branch = block.pre_norm(x)
    branch = F.gelu(block.norm1(block.conv1(branch)))
    branch = F.gelu(block.norm2(block.conv2(branch)))
    branch = block.conv3(block.se(branch))
    torch.testing.assert_close(block(x), x + branch)


def test_downsampling_block_pools_and_projects_the_shortcut():
    block = MBConv(8, 12, stride=2).eval().double()
    with torch.no_grad():
        for m in (block.conv3.weight, block.conv3.bias):
            m.zero_()  # residual branch off: only the shortcut remains
    x = torch.randn(1, 8, 6, 6, dtype=torch.float64)
    pooled = x.reshape(1, 8, 3, 2, 3, 2).mean((3, 5))
    torch.testing.assert_close(block(x), block.shortcut(pooled))


@pytest.mark.parametrize("stride_in_1x1", [False, True])
@pytest.mark.parametrize("size", [7, 8])
def test_stride_halves_any_size_rounding_up(stride_in_1x1, size):
    block = MBConv(4, 8, stride=2, stride_in_1x1=stride_in_1x1).eval()
    assert block(torch.randn(1, 4, size, size)).shape == (1, 8, (size + 1) // 2, (size + 1) // 2)
    strided = block.conv1 if stride_in_1x1 else block.conv2
    assert strided.stride == (2, 2)


def test_bad_arguments_and_inputs_raise_with_the_module_name():
    with pytest.raises(ValueError, match="MBConv: stride must be 1 or 2"):
        MBConv(8, 8, stride=3)
    with pytest.raises(ValueError, match="MBConv: expected 8 input channels, got 4"):
        MBConv(8, 8)(torch.randn(1, 4, 4, 4))


def test_se_rd_channels_and_act_layer_set_hidden_width_and_activation():
    se = SE(32, rd_channels=6, act_layer=nn.SiLU)
    assert se.fc1.out_features == 6 and isinstance(se.act, nn.SiLU)
    x = torch.randn(2, 32, 3, 3)
    s = torch.sigmoid(se.fc2(F.silu(se.fc1(x.mean((2, 3))))))
    torch.testing.assert_close(se(x), x * s[:, :, None, None])
    assert SE(32).fc1.out_features == 2 and isinstance(SE(32).act, nn.ReLU)  # defaults unchanged
    with pytest.raises(ValueError, match="SE: rd_channels must be a positive integer"):
        SE(32, rd_channels=0)
