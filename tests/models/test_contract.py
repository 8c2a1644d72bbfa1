"""timm's model contract on every registered model, at CI cost: the properties timm's own
tests/test_models.py checks (forward, backward reaching every parameter, pretrained_cfg fields,
classifier reset, pre-logits width, forward_intermediates against feature_info, features_only),
checked on the meta device (shapes and autograd without arithmetic) so the largest models cost
no more than the smallest. Numerical equality is checked on small models in the other files."""
from __future__ import annotations

import pytest
import torch
from tiny_models import TINY, tiny_model
from torch import nn

import attnvision as av
from attnvision.models._features import FeatureInfo, FeatureListNet

CFG_FIELDS = {"input_size", "mean", "std", "crop_pct", "interpolation", "num_classes", "fixed_input_size",
              "min_input_size", "test_input_size", "pool_size", "first_conv", "classifier", "license", "paper"}
NAMES = av.list_models()


def _meta(name, **kwargs):
    with torch.device("meta"):
        return av.create_model(name, **kwargs)


def _unused(model, outputs):
    loss = sum(o.float().mean() for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs]))
    loss.backward()
    return [n for n, p in model.named_parameters() if p.grad is None]


@pytest.mark.parametrize("name", NAMES)
def test_model_has_timms_metadata(name):
    model = _meta(name, num_classes=7)
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg and CFG_FIELDS <= set(cfg)
    assert cfg["fixed_input_size"] == ("vit" in name)
    assert model.get_classifier() is model.get_submodule(cfg["classifier"])
    first = model.get_submodule(cfg["first_conv"])
    assert isinstance(first, nn.Conv2d) and first.in_channels == cfg["input_size"][0]
    assert set(model.no_weight_decay()) <= {n for n, _ in model.named_parameters()}
    side, r = cfg["input_size"][1], model.feature_info[-1]["reduction"]
    assert cfg["pool_size"] == (-(-side // r),) * 2


def _module_count(name):
    return sum(1 for _ in _meta(name).modules())


# Meta-device ops run their shape functions in Python, so a forward costs about the model's op
# count: the variants with more than 300 modules (deeper copies of the same classes: ResNet-101/152,
# ResNet-110, VAN-B3…B6, ...) are left to the metadata test above and the FX test.
RUN = [n for n in NAMES if _module_count(n) <= 300]


@pytest.mark.parametrize("name", RUN)
def test_model_honours_timms_contract_and_features_only_uses_every_parameter(name):
    model = _meta(name, num_classes=7).train()
    cfg = model.pretrained_cfg
    x = torch.zeros(2, *cfg["input_size"], device="meta")
    final, maps = model.forward_intermediates(x)  # final is forward_features(x)
    side = cfg["input_size"][1]
    assert len(maps) == len(model.feature_info)
    for m, info in zip(maps, model.feature_info):
        assert m.shape == (2, info["num_chs"], -(-side // info["reduction"]), -(-side // info["reduction"]))
    if final.dim() == 4:  # CNNs: the final map has pool_size at input_size
        assert tuple(final.shape[-2:]) == cfg["pool_size"]
    assert model.forward_head(final, pre_logits=True).shape == (2, model.num_features) == (2, model.head_hidden_size)
    out = model.forward_head(final)
    assert out.shape == (2, 7)
    assert _unused(model, out) == []   # a training forward/backward reaches every parameter
    model.reset_classifier(0)
    assert model.num_classes == 0 and model.forward_head(final).shape == (2, model.num_features)
    model.reset_classifier(3)
    assert model.forward_head(final).shape == (2, 3)

    model.zero_grad(set_to_none=True)
    feats = FeatureListNet(model, out_indices=(0, -1))
    maps = feats(x)
    assert isinstance(feats.feature_info, FeatureInfo) and len(maps) == 2
    assert [m.shape[1] for m in maps] == feats.feature_info.channels()
    assert _unused(feats, maps) == []  # DDP with find_unused_parameters=False needs this


def test_in_chans_reaches_the_first_conv_and_the_cfg():
    for name in ("resnet18", "van_b0", "coatnet_0", "sasa_resnet26", "vit_tiny", "mobilenet_v1"):
        model = _meta(name, in_chans=1)
        assert model.get_submodule(model.pretrained_cfg["first_conv"]).in_channels == 1
        assert model.pretrained_cfg["input_size"][0] == 1


def _saved_bytes(model, x):
    """Bytes autograd keeps for the backward pass of ``model(x)`` (tensors packed by saved-tensor hooks)."""
    total = []

    def pack(t):
        total.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    return out, sum(total)


@pytest.mark.parametrize("family", TINY)
def test_grad_checkpointing_keeps_less_for_backward_with_equal_outputs_and_gradients(family):
    model, side = tiny_model(family)
    model.train()
    x = torch.randn(2, 3, side, side)
    runs = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        out, saved = _saved_bytes(model, x)
        out.square().sum().backward()
        runs.append((out.detach(), saved, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (plain, plain_saved, plain_grads), (ckpt, ckpt_saved, ckpt_grads) = runs
    assert ckpt_saved < 0.9 * plain_saved  # stems and between-stage modules stay outside the checkpoints
    torch.testing.assert_close(ckpt, plain)
    for n in plain_grads:
        torch.testing.assert_close(ckpt_grads[n], plain_grads[n], rtol=1e-4, atol=1e-5)


def test_list_models_takes_timms_filters():
    assert av.list_models("resnet50*", exclude_filters=["*_bam", "*_se"]) == ["resnet50", "resnet50_cbam",
                                                                              "resnet50_eca"]
    assert av.list_models(["van_b0", "van_b1"]) == ["van_b0", "van_b1"]
    published = av.list_models(pretrained=True)  # name.tag of the weights that download by themselves
    assert "resnet50.tv_in1k" in published and all(n.split(".")[0] in av.list_models() for n in published)
    with pytest.raises(TypeError, match="list_models: patterns must be strings, got 3"):
        av.list_models(3)


def test_feature_options_and_output_stride_are_checked():
    feats = _meta("resnet18", features_only=True, feature_cfg=dict(out_indices=2, feature_cls="getter"))
    assert feats.feature_info.reduction() == [16, 32] and feats.feature_info.module_name(0) == "layer3"
    assert feats.feature_info.get_dicts(keys=["num_chs"]) == [dict(num_chs=256), dict(num_chs=512)]
    assert _meta("resnet18", output_stride=32).num_classes == 1000
    with pytest.raises(ValueError,
                       match="resnet18 has no dilated variant; output_stride must be its native 32, got 16"):
        _meta("resnet18", output_stride=16)
    with pytest.raises(ValueError, match="feature_cls must be 'list' or 'getter', got 'dict'"):
        _meta("resnet18", features_only=True, feature_cls="dict")


def test_mobilenet_takes_timms_drop_path_rate_only_where_it_means_something():
    assert (_meta("mobilenet_v1", drop_path_rate=None).num_classes
            == _meta("mobilenet_v1", drop_path_rate=0.0).num_classes)
    with pytest.raises(ValueError, match="MobileNetV1: its blocks have no residual connection"):
        _meta("mobilenet_v1", drop_path_rate=0.1)


def test_no_weight_decay_names_the_position_tables_and_scales():
    assert {"pos_embed", "cls_token"} <= _meta("vit_tiny").no_weight_decay()
    assert "stages.0.blocks.0.ls1.gamma" in _meta("van_b0").no_weight_decay()
    assert any(n.endswith("relative_bias_table") for n in _meta("coatnet_0").no_weight_decay())
    assert _meta("resnet18").no_weight_decay() == set()
