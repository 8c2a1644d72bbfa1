"""The profiler against hand-computed counts, on real and meta-device models."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import attnvision as av
from attnvision.layers import CBAM, SE


def test_counts_convolutions_of_every_kind_by_hand():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),                   # 8*3*9 per pixel
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8),  # depth-wise: 8*9
        nn.Conv2d(8, 16, 3, padding=1, groups=2),       # grouped: 16*4*9
        nn.Flatten(), nn.Linear(16 * 10 * 12, 5),
    )
    p = av.profile(net, (2, 3, 10, 12))
    hw = 10 * 12
    expected = 2 * (8 * 3 * 9 * hw + 8 * 9 * hw + 16 * 4 * 9 * hw + 16 * hw * 5)
    assert p.macs == expected
    assert p.params == sum(q.numel() for q in net.parameters())


def test_counts_matmul_einsum_and_attention_products():
    class Toy(nn.Module):
        def forward(self, x):                       # (B, N, C)
            a = torch.einsum("bnc,bmc->bnm", x, x)  # B*N*N*C
            y = a.softmax(-1) @ x                   # B*N*N*C
            z = torch.nn.functional.scaled_dot_product_attention(x[:, None], x[:, None], x[:, None])
            return y * z[:, 0]                      # element-wise product: B*N*C

    b, n, c = 2, 7, 5
    p = av.profile(Toy(), (b, n, c))
    assert p.by_op["bmm"] == 2 * b * n * n * c
    assert p.by_op["mul"] == b * n * c
    assert p.macs == 4 * b * n * n * c + b * n * c


def test_scaling_by_a_scalar_is_not_an_attention_product():
    class Scale(nn.Module):
        def forward(self, x):
            return x * 0.5 * torch.tensor(2.0)

    assert av.profile(Scale(), (1, 4, 4, 4)).macs == 0


def test_attention_layers_are_counted_by_hand():
    c, h, w = 32, 6, 5
    se = av.profile(SE(c, reduction=4), (1, c, h, w))
    assert se.macs == c * (c // 4) * 2 + c * h * w
    cbam = av.profile(CBAM(c, reduction=4), (1, c, h, w))
    assert cbam.macs == 2 * c * (c // 4) * 2 + c * h * w + 2 * 49 * h * w + c * h * w


def test_meta_device_models_count_without_weights():
    p = av.profile("resnet152")
    assert p.params == 60_192_808 and p.gmacs > 11
    with torch.device("meta"):
        model = av.create_model("resnet152_cbam")
    assert av.profile(model).params == sum(q.numel() for q in model.parameters())


def test_profile_reports_and_errors():
    p = av.profile("resnet20", (1, 3, 32, 32), num_classes=10)
    d = p.as_dict()
    assert d["params"] == p.params and d["input_size"] == (1, 3, 32, 32) and d["name"] == "resnet20"
    with pytest.raises(ValueError, match="input_size must be positive integers"):
        av.profile("resnet20", (1, 3, 0, 32))
    with pytest.raises(TypeError, match="expected an nn.Module or a model name"):
        av.profile(42)
    with pytest.raises(ValueError, match="need a model name"):
        av.profile(nn.Identity(), (1, 3), stem="cifar")


def test_profile_restores_training_mode():
    model = av.create_model("resnet20")
    model.train()
    av.profile(model, (1, 3, 32, 32))
    assert model.training


def test_image_models_take_c_h_w_as_batch_one():
    model = av.create_model("resnet20", num_classes=10)
    three, four = av.profile(model, (3, 32, 32)), av.profile(model, (1, 3, 32, 32))
    assert three.input_size == four.input_size == (1, 3, 32, 32)
    assert three.macs == four.macs > 0
    assert av.profile("resnet20", (3, 32, 32), num_classes=10).macs == four.macs
    assert av.profile(model, (2, 3, 32, 32)).macs == 2 * four.macs
