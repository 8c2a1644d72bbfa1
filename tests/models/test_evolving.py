"""AA-ResNets, EA-AA-ResNets, ViTs and EA-ViTs: build, run, interface, parameter counts."""
from __future__ import annotations

import pytest
import torch

import attnvision as av
from attnvision.layers import AAConv2d, EvolvingAttention, collect_attention
from attnvision.models.aa_resnet import AABottleneck, AAPreActBlock, AAResNet, depth_for_heads
from attnvision.models.resnet import ResNetCfg
from attnvision.models.vit import ViTCfg, VisionTransformer

AA_NAMES = ["aa_resnet34", "aa_resnet50", "aa_resnet101", "aa_resnet152"]
VIT_NAMES = ["vit_tiny", "vit_small"]


def _meta_params(name, **kw):
    with torch.device("meta"):
        model = av.create_model(name, **kw)
    return sum(p.numel() for p in model.parameters()), model


@pytest.mark.parametrize("name", AA_NAMES)
def test_each_evolving_conv_adds_heads_squared_times_nine_plus_heads_parameters(name):
    plain, _ = _meta_params(name, kappa=0.25, upsilon=0.125, min_dk_per_head=1)  # the ea_* defaults
    evolving, model = _meta_params("ea_" + name)
    n_evolve = sum(1 for m in model.modules() if isinstance(m, AAConv2d) and m.evolve)
    assert n_evolve > 0 and evolving - plain == n_evolve * (8 * 8 * 9 + 8)


def test_ea_aa_resnet50_chain_runs_through_stages_2_and_3_and_restarts_at_stage_4():
    _, model = _meta_params("ea_aa_resnet50")
    roles = {name: m.roles[0] for name, m in model.named_modules() if isinstance(m, AABottleneck)}
    assert roles["layer2.0"] == "start" and roles["layer4.0"] == "start"
    assert all(r == "evolve" for n, r in roles.items() if n not in ("layer2.0", "layer4.0"))
    assert len(roles) == 4 + 6 + 3


def test_aa_resnet50_builds_at_the_papers_kappa_with_20_wide_key_heads():
    params, model = _meta_params("aa_resnet50")  # default κ = 2υ = 0.2, 8 heads, keys ≥ 20 a head
    depths = sorted({(m.out_channels, m.dk, m.dv) for m in model.modules() if isinstance(m, AAConv2d)})
    # dk = max(κ·F_out rounded to the heads, 20·8) = 160; dv: 0.1·128 = 12.8 → 16, 25.6 → 24, 51.2 → 48
    assert depths == [(128, 160, 16), (256, 160, 24), (512, 160, 48)]
    assert params == 25_782_256
    narrow, model = _meta_params("aa_resnet50", min_dk_per_head=1)
    depths = sorted({(m.out_channels, m.dk, m.dv) for m in model.modules() if isinstance(m, AAConv2d)})
    assert depths == [(128, 24, 16), (256, 48, 24), (512, 104, 48)]  # 25.6 → 24, 51.2 → 48, 102.4 → 104
    assert narrow == 25_115_374 and abs(narrow - 25.8e6) / 25.8e6 > 0.015  # what the paper's count rules out


def test_aa_resnet34_takes_no_key_minimum_by_default():
    params, model = _meta_params("aa_resnet34")
    assert {m.dk for m in model.modules() if isinstance(m, AAConv2d)} == {24, 48, 104}
    wide, _ = _meta_params("aa_resnet34", min_dk_per_head=20)
    assert abs(wide - 20.7e6) / 20.7e6 > 0.05 > abs(params - 20.7e6) / 20.7e6  # Table 2 counts it without


def test_aa_resnet152_has_the_aa_resnet50_layers_with_more_blocks():
    _, r50 = _meta_params("aa_resnet50")
    params, r152 = _meta_params("aa_resnet152")
    depths = {(m.out_channels, m.dk, m.dv) for m in r50.modules() if isinstance(m, AAConv2d)}
    assert {(m.out_channels, m.dk, m.dv) for m in r152.modules() if isinstance(m, AAConv2d)} == depths
    assert sum(isinstance(m, AAConv2d) for m in r152.modules()) == 8 + 36 + 3  # every block of stages 2-4
    _, ea = _meta_params("ea_aa_resnet152")
    roles = {n: m.roles[0] for n, m in ea.named_modules() if isinstance(m, AABottleneck)}
    assert [n for n, r in roles.items() if r == "start"] == ["layer2.0", "layer4.0"]


@pytest.mark.parametrize("name,paper", [("aa_resnet34", 20.7e6), ("aa_resnet50", 25.8e6), ("aa_resnet101", 45.4e6),
                                        ("aa_resnet152", 61.6e6), ("aa_wide_resnet28_10", 36.2e6)])
def test_aa_parameters_are_within_1_5_percent_of_the_paper(name, paper):
    num_classes = 100 if "wide" in name else 1000  # Bello et al. Table 1 is CIFAR-100, Table 2 ImageNet
    params, model = _meta_params(name, num_classes=num_classes)
    assert model.pretrained_cfg["paper_params"] == paper
    assert abs(params - paper) / paper < 0.015


def test_aa_wide_resnet_augments_the_first_conv_of_every_block_with_20_wide_key_heads():
    params, model = _meta_params("aa_wide_resnet28_10", num_classes=100)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 32, 32) and cfg["num_classes"] == 100
    blocks = [m for m in model.modules() if isinstance(m, AAPreActBlock)]
    assert len(blocks) == 12 and all(not isinstance(b.conv2, AAConv2d) for b in blocks)
    assert [(b.conv1.out_channels, b.conv1.dk, b.conv1.dv, b.conv1.stride) for b in blocks[::4]] == [
        (160, 160, 16, 1), (320, 160, 32, 2), (640, 160, 64, 2)]  # dk = max(κ·F_out, 20·8)
    assert not any(b.conv1.downsample for b in blocks)
    assert [b.conv1.rel.size for b in blocks[::4]] == [(32, 32), (16, 16), (8, 8)]
    narrower, plain = _meta_params("aa_wide_resnet28_10", num_classes=100, min_dk_per_head=1)
    assert [b.conv1.dk for b in plain.modules() if isinstance(b, AAPreActBlock)][::4] == [32, 64, 128]
    assert narrower < params
    with pytest.raises(ValueError, match="AAResNet: min_dk_per_head must be a positive integer, got 0"):
        _meta_params("aa_wide_resnet28_10", min_dk_per_head=0)


def test_pre_activation_aa_resnet_trains_at_small_size():
    cfg = ResNetCfg("preact_basic", (1, 2, 1), widths=(8, 16, 16), stem="cifar", stem_width=8)
    model = AAResNet(cfg, num_classes=5, heads=2, img_size=8, aa_stages=(0, 1, 2), attn_downsample_stages=(),
                     min_dk_per_head=4)
    x = torch.randn(2, 3, 8, 8)
    out = model(x)
    assert out.shape == (2, 5)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.layer1[0].conv1.dk == 8 and model.layer1[0].conv1.rel.size == (8, 8)
    maps = collect_attention(model.eval(), x)
    assert [tuple(m.shape) for m in maps.values()] == [(2, 2, 64, 64), (2, 2, 16, 16), (2, 2, 16, 16), (2, 2, 4, 4)]


@pytest.mark.parametrize("depth,heads,expected", [(25.6, 8, 24), (12.8, 8, 16), (12.0, 8, 16), (3.0, 8, 8),
                                                  (102.4, 8, 104), (32.0, 8, 32), (5.0, 2, 6)])
def test_depths_round_to_the_nearest_multiple_of_the_heads_at_least_one_per_head(depth, heads, expected):
    assert depth_for_heads(depth, heads) == expected


def test_ea_aa_resnets_keep_the_evolving_authors_depths_and_zero_depth_is_refused():
    _, model = _meta_params("ea_aa_resnet50")
    assert {(m.out_channels, m.dk, m.dv) for m in model.modules() if isinstance(m, AAConv2d)} == {
        (128, 32, 16), (256, 64, 32), (512, 128, 64)}
    with pytest.raises(ValueError, match=r"AAResNet: upsilon must be in \(0, 1\], got 0"):
        _meta_params("aa_resnet50", upsilon=0)


def test_vit_parameters_match_deit():
    for name, paper in (("vit_tiny", 5_717_416), ("vit_small", 22_050_664)):  # timm's deit_tiny/small counts
        params, model = _meta_params(name)
        assert params == paper
        assert abs(params - model.pretrained_cfg["paper_params"]) < 1e6  # the paper rounds to whole millions
    evolving, _ = _meta_params("ea_vit_small")
    assert evolving - 22_050_664 == 11 * (6 * 6 * 9 + 6)


def _tiny_aa(block, evolve, **kw):
    cfg = ResNetCfg(block, (1, 2, 2, 1), widths=(8, 16, 16, 32), stem_width=8)
    return AAResNet(cfg, num_classes=5, heads=2, img_size=32, evolve=evolve, **kw)


@pytest.mark.parametrize("block,evolve", [("basic", False), ("bottleneck", True)])
def test_aa_resnets_run_classify_and_extract_features_at_small_size(block, evolve):
    model = _tiny_aa(block, evolve).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 5)
    feats = model.forward_intermediates(x, intermediates_only=True)
    assert [f.shape[1] for f in feats] == [i["num_chs"] for i in model.feature_info]
    assert [32 // f.shape[-1] for f in feats] == [i["reduction"] for i in model.feature_info]
    torch.testing.assert_close(model.forward_head(model.forward_features(x)), model(x))


def test_aa_resnet_rejects_stage_indices_it_does_not_have():
    with pytest.raises(ValueError, match="AAResNet: aa_stages"):
        av.create_model("aa_resnet50", aa_stages=(4,))


def test_aa_resnet_registered_builders_run_features_only():
    feats = av.create_model("ea_aa_resnet34", img_size=32, features_only=True, out_indices=(1,))
    assert feats(torch.randn(1, 3, 32, 32))[0].shape == (1, 128, 4, 4)


def test_ea_aa_resnet_maps_of_every_layer_in_order_and_backward_reaches_first_layer():
    model = _tiny_aa("basic", True)
    x = torch.randn(2, 3, 32, 32)
    maps = collect_attention(model, x)
    assert list(maps)[:3] == ["layer2.0.conv1", "layer2.0.conv2", "layer2.1.conv1"]
    assert len(maps) == 2 * (2 + 2 + 1)
    torch.testing.assert_close(maps["layer3.0.conv1"].sum(-1), torch.ones(2, 2, 4))
    model(x).sum().backward()
    assert model.layer2[0].conv1.qkv.weight.grad.abs().sum() > 0


def test_vit_equals_timm_with_the_same_weights():
    from timm.models.vision_transformer import VisionTransformer as TimmViT
    ref = TimmViT(img_size=32, patch_size=16, num_classes=7, embed_dim=32, depth=2, num_heads=2).eval()
    ours = VisionTransformer(ViTCfg(32, 2, 2), num_classes=7, img_size=32).eval()
    report = av.load_checkpoint(ours, ref.state_dict())
    assert report.source == "attnvision"
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_ea_vit_evolves_from_the_second_block_and_keeps_every_map():
    model = VisionTransformer(ViTCfg(24, 4, 3), num_classes=4, img_size=32, evolve=True).eval()
    assert not isinstance(model.blocks[0].attn, EvolvingAttention)
    assert all(isinstance(b.attn, EvolvingAttention) for b in model.blocks[1:])
    maps = collect_attention(model, torch.randn(1, 3, 32, 32))
    assert list(maps) == [f"blocks.{i}.attn" for i in range(4)]
    assert all(m.shape == (1, 3, 5, 5) for m in maps.values())
    feats = model.forward_intermediates(torch.randn(1, 3, 32, 32), (3,), intermediates_only=True)
    assert feats[0].shape == (1, 24, 2, 2)


def test_vit_rejects_other_input_sizes():
    model = VisionTransformer(ViTCfg(24, 1, 3), img_size=32)
    with pytest.raises(ValueError, match="VisionTransformer: built for 32×32"):
        model(torch.randn(1, 3, 48, 48))


@pytest.mark.parametrize("size", [(48, 40), (16, 24), (32, 32)])
def test_dynamic_img_size_equals_timms_resampled_position_embedding(size):
    from timm.models.vision_transformer import VisionTransformer as TimmViT
    ref = TimmViT(img_size=32, patch_size=8, num_classes=7, embed_dim=32, depth=2, num_heads=2,
                  dynamic_img_size=True).eval()
    ours = VisionTransformer(ViTCfg(32, 2, 2, patch_size=8), num_classes=7, img_size=32, dynamic_img_size=True).eval()
    av.load_checkpoint(ours, ref.state_dict())
    x = torch.randn(2, 3, *size)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    maps = ours.forward_intermediates(x, intermediates_only=True)
    assert [m.shape for m in maps] == [(2, 32, size[0] // 8, size[1] // 8)] * 2


def test_dynamic_img_size_clears_fixed_input_size_and_traces_at_any_size():
    with torch.device("meta"):
        fixed = av.create_model("ea_vit_tiny", num_classes=3)
        dynamic = av.create_model("ea_vit_tiny", num_classes=3, dynamic_img_size=True)
    assert fixed.pretrained_cfg["fixed_input_size"] and fixed.pretrained_cfg["min_input_size"] == (3, 224, 224)
    assert not dynamic.pretrained_cfg["fixed_input_size"] and dynamic.pretrained_cfg["min_input_size"] == (3, 16, 16)
    model = VisionTransformer(ViTCfg(16, 2, 2, patch_size=8), num_classes=5, img_size=32, evolve=True,
                              dynamic_img_size=True).eval()
    x = torch.randn(2, 3, 40, 56)  # the evolving convolution runs on the 36×36 logit image of 1 + 5·7 tokens
    torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), model(x))
    with pytest.raises(ValueError, match="VisionTransformer: dynamic_img_size takes inputs whose sides are multiples "
                                         "of the patch size 8, got 40×60"):
        model(torch.randn(1, 3, 40, 60))


def test_aa_resnet_starts_as_the_authors_tensorflow_resnet():
    model = av.create_model("aa_resnet50", num_classes=100)
    plain = model.layer4[0].conv1  # 1024 → 512, 1×1
    assert plain.weight.std().item() == pytest.approx(1024 ** -0.5, rel=0.02)
    qkv = model.layer4[0].conv2.qkv
    assert qkv.weight.std().item() == pytest.approx(512 ** -0.5, rel=0.02)
    assert all(torch.all(p == 0) for n, p in model.named_parameters() if n.endswith("bias"))
    bound = (6.0 / (2048 + 100)) ** 0.5  # Glorot-uniform classifier
    assert model.fc.weight.abs().max().item() <= bound
    assert model.fc.weight.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.02)
    tv = av.create_model("aa_resnet50", num_classes=100, init="torchvision")
    he = (2.0 / (tv.layer4[0].conv2.qkv.out_channels)) ** 0.5
    assert tv.layer4[0].conv2.qkv.weight.std().item() == pytest.approx(he, rel=0.02)
