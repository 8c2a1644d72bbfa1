"""attnvision.timm: every model in timm's registry as av_<name>, built by timm.create_model as attnvision builds it,
with the cfg table timm's registry reads checked against the models."""
from __future__ import annotations

import json

import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import attnvision as av

timm = pytest.importorskip("timm")
avt = pytest.importorskip("attnvision.timm")

NAMES = av.list_models()
with open(avt.TABLE, encoding="utf-8") as _f:
    TABLE = json.load(_f)


def test_every_model_is_in_timms_registry_with_a_pretrained_cfg():
    assert timm.list_models("av_*") == timm.list_models("av_*", name_matches_cfg=True)
    assert sorted(timm.list_models("av_*")) == sorted("av_" + n for n in NAMES)
    assert timm.get_pretrained_cfg_value("av_resnet20_se", "input_size") == (3, 32, 32)
    assert timm.get_pretrained_cfg_value("av_ea_vit_tiny", "fixed_input_size") is True
    assert not timm.list_models("av_*", pretrained=True)  # no weights location in the registry
    assert avt.register_all() == []  # all there: registering again adds nothing


@pytest.mark.parametrize("name", NAMES)
def test_the_cfg_table_is_what_the_model_says(name):
    with torch.device("meta"):
        model = av.create_model(name)
    assert TABLE[name] == avt.timm_cfg(model.pretrained_cfg), "stale table: run python -m tools.timm_cfgs"


def test_timm_create_model_is_attnvisions_model_with_the_same_weights():
    ours = av.create_model("resnet18", num_classes=3).eval()
    theirs = timm.create_model("av_resnet18", num_classes=3).eval()
    assert type(theirs) is type(ours) and theirs.pretrained_cfg["architecture"] == "av_resnet18"
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(theirs(x), ours(x))
    data = timm.data.resolve_data_config(model=theirs)
    assert data["input_size"] == (3, 224, 224) and data["mean"] == ours.pretrained_cfg["mean"]


def test_timm_features_only_gives_attnvisions_feature_maps():
    model = av.create_model("van_b0").eval()
    feats = timm.create_model("av_van_b0", features_only=True, out_indices=(1, 3)).eval()
    av.load_checkpoint(feats, model.state_dict())  # the feature extractor's keys: the pruned model's
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = model.forward_intermediates(x, indices=(1, 3), intermediates_only=True)
        got = feats(x)
    assert feats.feature_info.channels() == [w.shape[1] for w in want] == [64, 256]
    assert feats.feature_info.reduction() == [8, 32]
    assert all(torch.equal(g, w) for g, w in zip(got, want))


def test_timm_factory_arguments_are_honoured_or_refused():
    model = timm.create_model("av_resnet20", device="meta", dtype=torch.bfloat16)
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("meta", torch.bfloat16)}
    with pytest.raises(TypeError, match="not_a_model_arg"):
        timm.create_model("av_mobilenet_v2_eca", not_a_model_arg=1)
    overlaid = timm.create_model("av_resnet20", pretrained_cfg_overlay=dict(mean=(0.5, 0.5, 0.5)))
    assert overlaid.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="av_resnet20 has no pretrained tag 'in1k'"):
        timm.create_model("av_resnet20.in1k")
    with pytest.raises(ValueError, match="takes no cache_dir; set HF_HUB_CACHE"):
        timm.create_model("av_resnet20", cache_dir="somewhere")


def test_timm_save_for_hf_folder_round_trips_through_timm(tmp_path):
    from timm.models._hub import save_for_hf

    model = timm.create_model("av_resnet20_eca", num_classes=4).eval()
    save_for_hf(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architecture"] == "av_resnet20_eca"
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_model_built_by_timm_is_saved_under_its_attnvision_name(tmp_path):
    model = timm.create_model("av_resnet20", num_classes=2).eval()
    av.save_pretrained(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architecture"] == "resnet20"
    with torch.no_grad():
        x = torch.randn(1, 3, 32, 32)
        assert torch.equal(av.load_model(tmp_path).eval()(x), model(x))


# timm's tests/test_models.py on a few av_ models: forward, backward reaching every parameter, and the FX graph
# its feature extraction traces (with timm's leaf modules and functions) computing the eager outputs, within
# timm's tolerance (the EA-ViT's graph computes the very same bits: tests/models/test_tracing.py).
SUBSET = {"av_resnet20_cbam": {}, "av_mobilenet_v1_eca": {}, "av_ea_vit_tiny": dict(img_size=32),
          "av_ea_aa_resnet34": dict(img_size=64), "av_coatnet_0": dict(img_size=64), "av_sasa_resnet26": {}}


def _tracer_kwargs():
    return dict(leaf_modules=timm.models.get_notrace_modules(), autowrap_functions=timm.models.get_notrace_functions(),
                param_shapes_constant=True)


@pytest.mark.parametrize("name", SUBSET)
def test_timm_forward_backward_and_fx_graph_on_a_subset(name):
    model = timm.create_model(name, num_classes=5, **SUBSET[name]).eval()
    size = SUBSET[name].get("img_size", 32 if "resnet20" in name else 64)
    x = torch.randn(2, 3, size, size)
    _, eval_nodes = get_graph_node_names(model, tracer_kwargs=_tracer_kwargs())
    graph = create_feature_extractor(model, return_nodes=[eval_nodes[-1]], tracer_kwargs=_tracer_kwargs())
    with torch.no_grad():
        eager = model(x)
        torch.testing.assert_close(next(iter(graph(x).values())), eager, rtol=1e-4, atol=1e-5)
    model.train()
    model(x).mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
