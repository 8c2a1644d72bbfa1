"""``global_pool``: timm's pooling options in ``create_model`` and ``reset_classifier`` on every family,
with timm's ``SelectAdaptivePool2d`` as the reference for what each option computes."""
from __future__ import annotations

import pytest
import torch
from timm.layers import SelectAdaptivePool2d as TimmPool
from tiny_models import CNN_FAMILIES, tiny_model

import attnvision as av
from attnvision.layers.adaptive_pool import POOL_TYPES

POOLED = [p for p in POOL_TYPES if p]


def _plain_pool_head(family) -> bool:
    """Families whose pre-logits are the pooled map itself (CoAtNet has a norm and a tanh layer after it)."""
    return family != "coatnet"


@pytest.mark.parametrize("family", CNN_FAMILIES)
def test_every_pooling_reaches_the_classifier_at_its_width(family):
    for pool_type in POOLED:
        model, side = tiny_model(family, global_pool=pool_type)
        x = torch.randn(2, 3, side, side)
        feats = model.forward_features(x)
        mult = 2 if pool_type == "catavgmax" else 1
        assert model.pool_type == pool_type
        if _plain_pool_head(family):
            torch.testing.assert_close(model.forward_head(feats, pre_logits=True),
                                       TimmPool(pool_type=pool_type, flatten=True)(feats))
            assert model.get_classifier().in_features == model.head_hidden_size == mult * model.num_features
        else:
            assert model.head.norm.normalized_shape == (mult * feats.shape[1],)
        assert model(x).shape == (2, 5)


@pytest.mark.parametrize("family", CNN_FAMILIES)
def test_reset_classifier_switches_the_pooling_and_no_pooling_returns_the_map(family):
    model, side = tiny_model(family)
    x = torch.randn(2, 3, side, side)
    feats = model.forward_features(x)
    model.reset_classifier(0, "")
    torch.testing.assert_close(model(x), feats)  # timm: reset_classifier(0, '') gives the unpooled map
    model.reset_classifier(4, "catavgmax")
    assert model(x).shape == (2, 4) and model.pool_type == "catavgmax"
    if _plain_pool_head(family):
        assert model.get_classifier().in_features == 2 * model.num_features
    model.reset_classifier(3)  # None keeps the pooling
    assert model.pool_type == "catavgmax" and model(x).shape == (2, 3)
    with pytest.raises(ValueError, match=r"global_pool='' keeps the unpooled feature map, which a classifier "
                                         r"cannot read; expected num_classes=0, got 3"):
        model.reset_classifier(3, "")
    assert model.pool_type == "catavgmax"  # a refused reset changes nothing


def test_create_model_takes_global_pool_and_checks_it():
    with torch.device("meta"):
        model = av.create_model("resnet50", global_pool="catavgmax")
        assert model.fc.in_features == 4096 and model.num_features == 2048
        unpooled = av.create_model("coatnet_0", num_classes=0, global_pool="")
        x = torch.zeros(1, 3, 224, 224)
        assert unpooled(x).shape == (1, 768, *unpooled.pretrained_cfg["pool_size"])
        with pytest.raises(ValueError, match=r"ResNet: global_pool must be one of \('avg', 'max', 'avgmax', "
                                             r"'catavgmax', ''\), got 'mean'"):
            av.create_model("resnet18", global_pool="mean")
        with pytest.raises(ValueError, match="VAN: global_pool='' keeps the unpooled feature map"):
            av.create_model("van_b0", global_pool="")


def test_vit_pools_its_class_token_or_the_mean_of_its_patch_tokens():
    model, side = tiny_model("ea_vit", global_pool="avg")
    x = torch.randn(2, 3, side, side)
    tokens = model.forward_features(x)  # (B, 1 + N, dim), after the final norm
    torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), tokens[:, 1:].mean(1))
    model.reset_classifier(3, "token")
    torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), tokens[:, 0])
    for bad in ("max", ""):
        with pytest.raises(ValueError, match=rf"VisionTransformer: global_pool must be one of \('token', 'avg'\), "
                                             rf"got '{bad}'"):
            model.reset_classifier(0, bad)
