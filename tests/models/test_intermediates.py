"""forward_intermediates, prune_intermediate_layers and features_only with timm's contract."""
from __future__ import annotations

import pytest
import torch
from tiny_models import TINY, tiny_model

import attnvision as av
from attnvision.models._features import FeatureListNet


@pytest.mark.parametrize("family", TINY)
def test_forward_intermediates_returns_forward_features_and_the_maps_asked_for(family):
    model, side = tiny_model(family)
    x = torch.randn(2, 3, side, side)
    n = len(model.feature_info)
    final, every = model.forward_intermediates(x)
    torch.testing.assert_close(final, model.forward_features(x))
    assert [f.shape[1] for f in every] == [i["num_chs"] for i in model.feature_info]
    assert [-(-side // f.shape[-1]) for f in every] == [i["reduction"] for i in model.feature_info]
    last_two = model.forward_intermediates(x, 2, intermediates_only=True)
    negative = model.forward_intermediates(x, [-1, -2], intermediates_only=True)
    for got in (last_two, negative):
        assert len(got) == 2
        for g, want in zip(got, every[-2:]):
            torch.testing.assert_close(g, want)
    early, first = model.forward_intermediates(x, [0], stop_early=True)
    torch.testing.assert_close(first[0], every[0])
    assert early.shape[1] == model.feature_info[0]["num_chs"] or "vit" in family
    assert n >= 2


@pytest.mark.parametrize("indices", [5, 0, [4], [-5], [0, 1.0], "0"])
def test_bad_indices_raise_before_any_stage_runs(indices):
    model, side = tiny_model("van")
    ran = []
    model.stages[0].register_forward_hook(lambda *a: ran.append(1))
    with pytest.raises((ValueError, TypeError), match=r"VAN: indices"):
        model.forward_intermediates(torch.randn(1, 3, side, side), indices)
    assert ran == []


def test_output_fmt_other_than_nchw_is_an_error():
    model, side = tiny_model("van")
    with pytest.raises(ValueError, match="VAN: output_fmt must be 'NCHW', got 'NHWC'"):
        model.forward_intermediates(torch.randn(1, 3, side, side), output_fmt="NHWC")


def test_norm_applies_the_final_norm_to_the_last_map():
    model, side = tiny_model("preresnet_se")
    x = torch.randn(2, 3, side, side)
    final, (raw,) = model.forward_intermediates(x, [-1])
    _, (normed,) = model.forward_intermediates(x, [-1], norm=True)
    torch.testing.assert_close(normed, model.final_norm(raw))
    torch.testing.assert_close(normed, final)
    vit, side = tiny_model("ea_vit")
    x = torch.randn(2, 3, side, side)
    plain = vit.forward_intermediates(x, [0], intermediates_only=True)[0]
    normed = vit.forward_intermediates(x, [0], norm=True, intermediates_only=True)[0]
    tokens = plain.flatten(2).transpose(1, 2)
    torch.testing.assert_close(normed.flatten(2).transpose(1, 2), vit.norm(tokens), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", TINY)
def test_prune_intermediate_layers_keeps_the_maps_and_drops_the_rest(family):
    model, side = tiny_model(family)
    x = torch.randn(2, 3, side, side)
    want = model.forward_intermediates(x, [0, 1], intermediates_only=True)
    before = sum(p.numel() for p in model.parameters())
    assert model.prune_intermediate_layers([0, 1]) == [0, 1]
    assert len(model.feature_info) == 2 and model.num_classes == 0
    assert sum(p.numel() for p in model.parameters()) < before
    for got, w in zip(model.forward_intermediates(x, intermediates_only=True), want):
        torch.testing.assert_close(got, w)


@pytest.mark.parametrize("family", TINY)
def test_features_only_leaves_no_parameter_without_a_gradient(family):
    model, side = tiny_model(family)
    feats = FeatureListNet(model.train(), out_indices=(0, -1))
    sum(f.float().square().mean() for f in feats(torch.randn(2, 3, side, side))).backward()
    unused = [n for n, p in feats.named_parameters() if p.grad is None]
    assert unused == []


def test_features_only_drops_the_final_norm_and_later_stages_and_still_loads_full_checkpoints():
    full = av.create_model("preresnet110", num_classes=10)
    feats = av.create_model("preresnet110", features_only=True, out_indices=(0, 1))
    assert not any(k.startswith(("final_norm", "layer3", "fc")) for k in feats.model.state_dict())
    report = av.load_checkpoint(feats, full.state_dict())
    assert report.missing_keys == [] and report.unexpected_keys == []
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(feats.eval()(x)[1],
                               full.eval().forward_intermediates(x, [1], intermediates_only=True)[0])
