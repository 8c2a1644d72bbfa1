"""The registry: names, closest-name errors, external models, and every model building."""
from __future__ import annotations

import pytest
import torch

import attnvision as av


def test_list_models_is_sorted_and_filters_by_pattern():
    names = av.list_models()
    assert names == sorted(names) and len(names) == len(set(names))
    assert av.list_models("resnet50*") == ["resnet50", "resnet50_bam", "resnet50_cbam", "resnet50_eca", "resnet50_se"]
    assert av.list_models("no_such_*") == []


def test_unknown_model_suggests_the_closest_names():
    with pytest.raises(ValueError, match=r"create_model: unknown name 'resnet50_cbma'; did you mean 'resnet50_cbam'"):
        av.create_model("resnet50_cbma")
    with pytest.raises(TypeError, match="name must be a string"):
        av.create_model(50)


def test_pretrained_is_published_weights_a_tag_or_a_local_path():
    with pytest.raises(ValueError, match="'resnet20' has no published weights .* pass pretrained=PATH"):
        av.create_model("resnet20", pretrained=True)
    with pytest.raises(TypeError, match="pretrained must be False, True, a tag of the model's published weights or a "
                                        "local path, got 1.5"):
        av.create_model("resnet20", pretrained=1.5)
    with pytest.raises(TypeError, match="pretrained must be False or a local path for timm:resnet18"):
        av.create_model("timm:resnet18", pretrained=True)


def test_external_models_build_without_downloading():
    tv = av.create_model("torchvision:resnet18", num_classes=5).eval()
    assert tv(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    tm = av.create_model("timm:resnet18", num_classes=5).eval()
    assert tm(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    with pytest.raises(ValueError, match="unknown name 'resnet_18'"):
        av.create_model("torchvision:resnet_18")


@pytest.mark.parametrize("name", av.list_models())
def test_every_registered_model_builds_on_meta_and_honours_the_interface(name):
    with torch.device("meta"):
        model = av.create_model(name, num_classes=10)
        cfg = model.pretrained_cfg
        x = torch.zeros(2, *cfg["input_size"])
        out = model.eval()(x)
    assert out.shape == (2, 10)
    assert {"input_size", "mean", "std", "crop_pct", "paper"} <= set(cfg)
    assert model.num_classes == 10 and model.num_features > 0
    assert model.feature_info and all({"num_chs", "reduction", "module"} <= set(i) for i in model.feature_info)
    assert model.feature_info[-1]["num_chs"] <= model.num_features or model.num_features > 0


@pytest.mark.parametrize("name", ["resnet20", "van_b0", "coatnet_0", "timm:resnet18"])
def test_pretrained_cfg_follows_in_chans(name):
    with torch.device("meta"):
        rgb = av.create_model(name).pretrained_cfg
        gray = av.create_model(name, in_chans=1).pretrained_cfg
        four = av.create_model(name, in_chans=4).pretrained_cfg
    assert gray["input_size"] == (1, *rgb["input_size"][1:]) and four["input_size"] == (4, *rgb["input_size"][1:])
    assert gray["mean"] == pytest.approx((sum(rgb["mean"]) / 3,))
    assert gray["std"] == pytest.approx((sum(rgb["std"]) / 3,))
    assert four["mean"] == (*rgb["mean"], rgb["mean"][0]) and len(four["std"]) == 4


def test_torchvision_models_carry_their_weights_preprocessing():
    import torchvision.models as tvm

    cfg = av.create_model("torchvision:resnet18", num_classes=10).pretrained_cfg
    transform = tvm.ResNet18_Weights.DEFAULT.transforms()
    assert cfg["input_size"] == (3, *transform.crop_size * 2)
    assert cfg["mean"] == tuple(transform.mean) and cfg["crop_pct"] == transform.crop_size[0] / transform.resize_size[0]


@pytest.mark.parametrize("name", ["resnet18", "timm:resnet18"])
def test_features_only_returns_a_list_of_maps_for_native_and_timm_models(name):
    model = av.create_model(name, features_only=True, out_indices=(-2, -1))
    maps = model(torch.randn(1, 3, 64, 64))
    assert isinstance(maps, list) and len(maps) == 2
    assert [m.shape[1] for m in maps] == [info["num_chs"] for info in model.feature_info]
    assert all(m.dim() == 4 for m in maps)


def test_one_registry_type_refuses_duplicates_suggests_close_names_and_lists_sorted():
    from attnvision.registry import Registry

    reg = Registry("widget")
    reg.register("beta", 2)
    reg.register("alpha", 1)
    with pytest.raises(ValueError, match="a widget named 'beta' is already registered"):
        reg.register("beta", 3)
    reg.register("beta", 3, override=True)
    assert reg.names() == ["alpha", "beta"] and reg["beta"] == 3 and "alpha" in reg and len(reg) == 2
    with pytest.raises(ValueError, match="widget: unknown name 'alpah'; did you mean 'alpha'"):
        reg.get("alpah")
    reg.register_lazy("later", "attnvision.layers.eca:ECA")
    assert "later" in reg and reg.get("later").__name__ == "ECA"


def test_every_registry_is_the_one_type():
    from attnvision.compare import RUN_METRICS
    from attnvision.data import DATASETS
    from attnvision.explain import EXPLAIN_METHODS
    from attnvision.layers.create_attn import ATTN_KINDS
    from attnvision.registry import MODELS, Registry
    from attnvision.train.tasks import TASKS

    for reg in (MODELS, ATTN_KINDS, TASKS, DATASETS, RUN_METRICS, EXPLAIN_METHODS):
        assert isinstance(reg, Registry) and len(reg) > 0, reg


@pytest.mark.parametrize("name", ["resnet18", "resnet20", "mobilenet_v1", "mobilenet_v2"])
def test_a_registered_attention_kind_plugs_into_every_family_that_takes_attn(name):
    from torch import nn

    class Gate(nn.Module):
        def __init__(self, channels, scale=1.0):
            super().__init__()
            self.fc = nn.Conv2d(channels, channels, 1)

        def forward(self, x):
            return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))

    from attnvision.layers.create_attn import ATTN_KINDS

    av.register_attn("test_gate", Gate, override=True)
    try:
        model = av.create_model(name, attn="test_gate", num_classes=3)
        assert sum(isinstance(m, Gate) for m in model.modules()) > 0
        assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)
        with pytest.raises(ValueError, match="attention kind named 'test_gate' is already registered"):
            av.register_attn("test_gate", Gate)
    finally:
        ATTN_KINDS.unregister("test_gate")


def test_a_registered_dataset_trains_through_the_same_spec_strings(tmp_path):
    from attnvision.data import DATASETS, create_dataset, data_task, register_dataset

    def small_digits(arg, split, *, seed, **_):
        full = create_dataset("digits", split, seed=seed)
        full.base.images, full.base.labels = full.base.images[:int(arg)], full.base.labels[:int(arg)]
        return full

    register_dataset("few-digits", small_digits, argument=True)
    try:
        data = create_dataset("few-digits:40", "val")
        assert len(data) == 40 and data_task("few-digits:40") == "classification"
        with pytest.raises(ValueError, match="data: unknown name 'few-digit'; did you mean 'few-digits'"):
            create_dataset("few-digit", "val")
    finally:
        DATASETS.unregister("few-digits")


def test_a_registered_explanation_method_is_used_by_gradcam():
    from attnvision.explain import EXPLAIN_METHODS, gradcam

    EXPLAIN_METHODS.register("uniform", lambda act, grad: torch.ones(act.shape[:2]))
    try:
        model = av.create_model("resnet20", num_classes=3).eval()
        cams = gradcam(model, torch.randn(2, 3, 32, 32), method="uniform", normalize=False)
        assert cams.shape == (2, 32, 32) and (cams >= 0).all()
    finally:
        EXPLAIN_METHODS.unregister("uniform")


def test_torchvision_models_take_other_channel_counts_with_the_rgb_kernels_summed_or_repeated():
    torch.manual_seed(0)
    rgb = av.create_model("torchvision:resnet18", num_classes=4)
    torch.manual_seed(0)
    grey = av.create_model("torchvision:resnet18", num_classes=4, in_chans=1)
    torch.manual_seed(0)
    five = av.create_model("torchvision:resnet18", num_classes=4, in_chans=5)
    assert torch.equal(grey.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    assert torch.allclose(five.conv1.weight[:, 3:], rgb.conv1.weight[:, :2] * 3 / 5)
    x = torch.randn(2, 1, 32, 32)
    assert torch.allclose(grey.eval()(x), rgb.eval()(x.expand(-1, 3, -1, -1)), atol=1e-5)
    assert grey.pretrained_cfg["input_size"][0] == 1 and len(grey.pretrained_cfg["mean"]) == 1
