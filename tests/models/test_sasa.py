"""SASA-ResNets: parameter and MAC counts against the paper and a public port, the timm interface."""
from __future__ import annotations

import json

import pytest
import torch

import attnvision as av
from attnvision.layers import LocalSelfAttention2d, SpatiallyAwareStem
from attnvision.models.sasa import SASAResNet

NAMES = ("sasa_resnet26", "sasa_resnet38", "sasa_resnet50")


def _meta(name, **kwargs):
    with torch.device("meta"):
        return av.create_model(name, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_conv_stem_params_match_the_public_port_up_to_its_cifar_stem(name, reference_dir):
    port = json.loads((reference_dir / "param_counts.json").read_text())[name]
    ours = sum(p.numel() for p in _meta(name, stem="conv").parameters())
    # the port's stem is a CIFAR 3×3 conv (3·64·9 weights); ours is ResNet's 7×7 conv (3·64·49)
    assert ours - port == 3 * 64 * 49 - 3 * 64 * 9


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("stem", ["conv", "attention"])
def test_params_and_macs_are_near_the_papers(name, stem):
    model = _meta(name, stem=stem)
    cfg = model.pretrained_cfg
    p = av.profile(model, (1, 3, 224, 224))
    assert abs(p.params / cfg["paper_params"] - 1) < 0.01
    assert abs(p.macs / cfg["paper_macs"] - 1) < 0.08
    assert p.by_op["attnvision.local_attention"] > 0


def test_full_attention_resnet50_saves_params_and_macs_like_the_paper():
    conv, attn = av.profile("resnet50"), av.profile("sasa_resnet50", stem="attention")
    assert attn.params / conv.params - 1 == pytest.approx(-0.29, abs=0.01)
    assert -0.20 < attn.macs / conv.macs - 1 < -0.10


def test_every_spatial_layer_is_attention_with_the_requested_ablation_settings():
    model = _meta("sasa_resnet26", kernel_size=5, heads=4, pos="absolute", stem="conv")
    attn = [m for m in model.modules() if isinstance(m, LocalSelfAttention2d)]
    assert len(attn) == sum(model.cfg.layers)
    assert all((m.kernel_size, m.heads, m.pos) == (5, 4, "absolute") for m in attn)
    assert not any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules())
    assert [m.stride for m in attn] == [1, 2, 1, 2, 1, 1, 1, 2]
    assert isinstance(_meta("sasa_resnet26").stem, SpatiallyAwareStem)


def test_classifier_runs_and_follows_the_timm_interface():
    model = av.create_model("sasa_resnet26", num_classes=7).eval()
    x = torch.randn(2, 3, 40, 36)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    assert feats.shape == (2, 2048, 2, 2)
    assert pooled.shape == (2, model.num_features) == (2, 2048)
    model.reset_classifier(3)
    assert model.num_classes == 3 and model.get_classifier().out_features == 3
    assert model.pretrained_cfg["input_size"] == (3, 224, 224) and "Stand-Alone" in model.pretrained_cfg["paper"]


@pytest.mark.parametrize("stem", ["attention", "conv"])
def test_features_only_gives_one_map_per_stage(stem):
    model = av.create_model("sasa_resnet26", features_only=True, stem=stem).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [i["num_chs"] for i in model.feature_info] == [256, 512, 1024, 2048]
    assert [64 // f.shape[-1] for f in feats] == [i["reduction"] for i in model.feature_info] == [4, 8, 16, 32]
    sub = av.create_model("sasa_resnet26", features_only=True, out_indices=(1, -1))
    assert [i["reduction"] for i in sub.feature_info] == [8, 32]


def test_keep_attention_exposes_a_query_pixels_map_inside_the_model():
    model = av.create_model("sasa_resnet26", num_classes=3, stem="conv").eval()
    layer = model.layer3[1].attn
    layer.keep_attention, layer.attention_query = True, (1, 2)
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    amap = layer.last_attention
    assert amap.shape == (2, layer.heads, 4, 4)
    torch.testing.assert_close(amap.sum((2, 3)), torch.ones(2, layer.heads), rtol=0, atol=1e-5)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="SASAResNet.*stem"):
        av.create_model("sasa_resnet26", stem="patch")
    with pytest.raises(ValueError, match="SASAResNet.*pos"):
        av.create_model("sasa_resnet26", pos="learned")
    with pytest.raises(ValueError, match="SASAResNet.*input of shape"):
        av.create_model("sasa_resnet26", num_classes=2)(torch.randn(1, 1, 32, 32))
    assert isinstance(av.create_model("sasa_resnet38", num_classes=2, stem="conv"), SASAResNet)


@pytest.mark.parametrize("stages", [(2, 3, 4), (3, 4), (4,), (1, 2), ()])
def test_attention_stages_keep_convolutions_elsewhere_and_change_params_by_exactly_those_layers(stages):
    full, mixed = _meta("sasa_resnet50", stem="conv"), _meta("sasa_resnet50", stem="conv", attention_stages=stages)
    for i, stage in enumerate(mixed.stages, start=1):
        blocks = list(stage)
        assert all(b.attention == (i in stages) for b in blocks)
        assert all(isinstance(b.attn if b.attention else b.conv2,
                              LocalSelfAttention2d if b.attention else torch.nn.Conv2d)
                   for b in blocks)
    # per block: a 3×3 conv (9p²) instead of W_Q, W_K, W_V (3p²) and the relative embeddings (p·k, k = 7)
    delta = sum(len(list(s)) * (6 * w * w - 7 * w) for i, (s, w) in enumerate(zip(full.stages, full.cfg.widths), 1)
                if i not in stages)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(mixed) - n(full) == delta


def test_all_convolution_stages_are_resnet50():
    ours = _meta("sasa_resnet50", stem="conv", attention_stages=())
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in _meta("resnet50").parameters())
    assert av.profile(ours).macs == av.profile("resnet50").macs


def test_position_only_logits_equal_the_full_layer_with_zero_keys():
    both = LocalSelfAttention2d(8, 16, kernel_size=3, heads=2).double()
    position = LocalSelfAttention2d(8, 16, kernel_size=3, heads=2, logits="position").double()
    assert position.qkv.weight.shape[0] == 2 * 16  # no W_K
    w_q, w_k, w_v = both.qkv.weight.detach().split(16)
    with torch.no_grad():
        position.qkv.weight.copy_(torch.cat([w_q, w_v]))
        both.qkv.weight.copy_(torch.cat([w_q, torch.zeros_like(w_k), w_v]))
        position.rel.load_state_dict(both.rel.state_dict())
    x = torch.randn(2, 8, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(position(x), both(x))


def test_content_only_logits_are_the_layer_without_positions():
    content = LocalSelfAttention2d(8, 16, kernel_size=3, heads=2, logits="content")
    none = LocalSelfAttention2d(8, 16, kernel_size=3, heads=2, pos="none")
    assert content.rel is None and content.state_dict().keys() == none.state_dict().keys()
    none.load_state_dict(content.state_dict())
    x = torch.randn(1, 8, 5, 5)
    torch.testing.assert_close(content(x), none(x))


def test_logit_and_stage_switches_reach_every_layer_and_bad_values_are_named():
    model = _meta("sasa_resnet26", stem="conv", logits="position")
    assert all(m.logits == "position" for m in model.modules() if isinstance(m, LocalSelfAttention2d))
    with pytest.raises(ValueError, match="attention_stages"):
        _meta("sasa_resnet26", attention_stages=(0, 5))
    with pytest.raises(ValueError, match="SASAResNet: logits"):
        _meta("sasa_resnet26", logits="keys")
    with pytest.raises(ValueError, match="needs pos='relative'"):
        LocalSelfAttention2d(8, 16, pos="none", logits="position")
