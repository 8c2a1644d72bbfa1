"""ResNet family: parameter counts against the papers and the authors' code, official fixtures,
placement of the attention modules, features_only and the timm interface."""
from __future__ import annotations

import json
import math

import pytest
import torch

import attnvision as av
from attnvision.layers import BAM, CBAM, ECA, SE
from attnvision.models.resnet import ResNet


def _params(name, **kwargs):
    with torch.device("meta"):
        return sum(p.numel() for p in av.create_model(name, **kwargs).parameters())


@pytest.mark.parametrize("name,expected", [
    ("resnet50", 25_557_032), ("resnet50_se", 28_088_024), ("resnet50_cbam", 28_089_624),
    ("resnet50_bam", 25_918_689), ("resnet50_eca", 25_557_032 + 80),
])
def test_resnet50_parameter_counts_match_the_issue(name, expected):
    assert _params(name) == expected


def test_resnet50_bam_product_is_the_authors_count_and_sum_adds_the_papers_bns():
    product = _params("resnet50_bam", attn_kwargs=dict(combine="product"))
    assert product == 25_915_099
    assert _params("resnet50_bam") - product == sum(2 * c + 2 for c in (256, 512, 1024))


@pytest.mark.parametrize("name,millions", [
    ("resnet18_se", 11.78), ("resnet34_se", 21.96), ("resnet101_se", 49.33),
    ("resnet18_cbam", 11.78), ("resnet34_cbam", 21.96), ("resnet101_cbam", 49.33),
    ("resnext50_32x4d", 25.03), ("resnext50_32x4d_se", 27.56),
])
def test_parameter_counts_round_to_the_papers(name, millions):
    assert round(_params(name) / 1e6, 2) == millions


def _official_counts(reference_dir):
    """(our model, its kwargs, the count measured on the authors' code); BAM as released is combine="product"."""
    counts = json.loads((reference_dir / "param_counts.json").read_text())
    ours = {}
    for depth in (18, 34, 50, 101):
        ours[f"resnet{depth}_plain_imagenet"] = (f"resnet{depth}", {})
        ours[f"resnet{depth}_cbam_imagenet"] = (f"resnet{depth}_cbam", {})
        ours[f"resnet{depth}_bam_imagenet"] = (f"resnet{depth}_bam", dict(attn_kwargs=dict(combine="product")))
    for depth, k in ((18, "3577"), (34, "3357"), (50, "3557"), (101, "3357"), (152, "3357")):
        ours[f"eca_resnet{depth}_k{k}"] = (f"resnet{depth}_eca", {})
    for depth in (18, 34, 50, 101):
        ours[f"timm_legacy_seresnet{depth}"] = (f"resnet{depth}_se", {})
    return [(*ours[key], counts[key]) for key in ours]


def test_every_count_measured_on_the_authors_code_is_reproduced(reference_dir):
    for name, kwargs, expected in _official_counts(reference_dir):
        assert _params(name, **kwargs) == expected, name


def test_macs_match_torchvision_layout_and_the_papers_layout():
    assert round(av.profile("resnet50").gmacs, 2) == 4.09
    assert round(av.profile("resnet50", stride_in_1x1=True).gmacs, 2) == 3.86


@pytest.mark.parametrize("fixture,name,kwargs", [
    ("resnet18_cbam_imagenet.pt", "resnet18_cbam", {}),
    ("resnet18_bam_imagenet.pt", "resnet18_bam", {"attn_kwargs": {"combine": "product"}}),
    ("eca_resnet18_k3577.pt", "resnet18_eca", {}),
])
def test_official_checkpoints_reproduce_the_authors_outputs(load_reference, fixture, name, kwargs):
    ref = load_reference(fixture)
    model = av.create_model(name, num_classes=10, **kwargs).double().eval()
    report = av.load_checkpoint(model, {f"module.{k}": v for k, v in ref["state_dict"].items()}, source="official")
    assert report.missing_keys == [] and report.unexpected_keys == [] and report.source == "official"
    with torch.no_grad():
        out64 = model(ref["input"].double())
        pooled = model.forward_head(model.forward_features(ref["input"].double()), pre_logits=True)
        out32 = model.float()(ref["input"])
    torch.testing.assert_close(out64, ref["output_fp64"].double(), rtol=0, atol=1e-9)
    torch.testing.assert_close(out32, ref["output_fp32"], rtol=1e-4, atol=5e-5)
    # the authors' pooled layer4 (stored as float32): localises a mismatch before the classifier
    torch.testing.assert_close(pooled.float(), ref["feat.avgpool_fp64"].flatten(1), rtol=1e-5, atol=1e-5)


def test_official_bam_checkpoint_into_sum_model_tells_how_to_build_it(load_reference):
    model = av.create_model("resnet18_bam", num_classes=10)
    with pytest.raises(ValueError, match=r'attn_kwargs=dict\(combine="product"\)'):
        av.load_checkpoint(model, load_reference("resnet18_bam_imagenet.pt")["state_dict"])


def test_auto_source_detects_official_layout_and_state_dict_wrapper(load_reference, tmp_path):
    ref = load_reference("resnet18_cbam_imagenet.pt")
    path = tmp_path / "official.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref["state_dict"].items()}, "epoch": 3}, path)
    model = av.create_model("resnet18_cbam", num_classes=10, pretrained=str(path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ref["input"]), ref["output_fp32"], rtol=1e-4, atol=5e-5)


def test_our_checkpoint_round_trips_through_safetensors(tmp_path):
    from safetensors.torch import save_file

    model = av.create_model("resnet20_cbam", num_classes=10).eval()
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    other = av.create_model("resnet20_cbam", num_classes=10, pretrained=str(tmp_path / "w.safetensors")).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(other(x), model(x))


def test_checkpoint_errors_list_the_offending_keys():
    model = av.create_model("resnet20", num_classes=10)
    sd = model.state_dict()
    bad = dict(sd, **{"fc.weight": torch.zeros(5, 64)})
    with pytest.raises(ValueError, match=r"fc.weight: checkpoint \(5, 64\) vs model \(10, 64\)"):
        av.load_checkpoint(model, bad)
    partial = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    with pytest.raises(ValueError, match=r"missing 2 keys: fc.weight, fc.bias"):
        av.load_checkpoint(model, partial)
    report = av.load_checkpoint(model, dict(partial, extra=torch.zeros(1)), source="attnvision", strict=False)
    assert report.missing_keys == ["fc.weight", "fc.bias"] and report.unexpected_keys == ["extra"]
    with pytest.raises(ValueError, match=r"no attention module at 'layer1.0.attn'"):
        av.load_checkpoint(av.create_model("resnet18"), {"layer1.0.cbam.ChannelGate.mlp.1.weight": torch.zeros(4, 64)},
                           source="official")
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        av.load_checkpoint(model, "/nonexistent/file.pth")


def _attention_modules(model, cls):
    return [name for name, m in model.named_modules() if isinstance(m, cls)]


def test_block_attention_sits_in_every_block_and_bam_between_stages():
    for kind, cls in (("se", SE), ("eca", ECA), ("cbam", CBAM)):
        model = av.create_model(f"resnet50_{kind}")
        names = _attention_modules(model, cls)
        assert len(names) == 16 and all(n.endswith(".attn") for n in names)
    bam = _attention_modules(av.create_model("resnet50_bam"), BAM)
    assert bam == ["stage_attn.0", "stage_attn.1", "stage_attn.2"]
    assert _attention_modules(av.create_model("resnet20_bam"), BAM) == ["stage_attn.0", "stage_attn.1"]


def test_eca_resnets_default_to_the_released_kernel_sizes():
    for depth, kernels in ((18, (3, 5, 7, 7)), (34, (3, 3, 5, 7)), (50, (3, 5, 5, 7)), (101, (3, 3, 5, 7))):
        model = av.create_model(f"resnet{depth}_eca")
        assert tuple(stage[0].attn.k_size for stage in model.stages) == kernels
    adaptive = av.create_model("resnet20_eca")
    assert [s[0].attn.k_size for s in adaptive.stages] == [3, 3, 3]


def _stage_kernels(name, **kwargs):
    with torch.device("meta"):
        model = av.create_model(name, **kwargs)
    kernels = [[b.attn.k_size for b in stage] for stage in model.stages]
    assert all(len(set(k)) == 1 for k in kernels)  # one kernel a stage
    return tuple(k[0] for k in kernels)


@pytest.mark.parametrize("name", ["resnet18_eca", "resnet50_eca", "resnet20_eca", "resnext50_32x4d_eca"])
@pytest.mark.parametrize("gamma,b", [(2, 1), (1, 1), (3, 2)])
def test_eca_kernels_paper_follows_eq_14_with_gamma_and_b(name, gamma, b):
    with torch.device("meta"):
        model = av.create_model(name, eca_kernels="paper", attn_kwargs=dict(gamma=gamma, b=b))
    for stage in model.stages:
        c = stage[0].attn.channels
        t = int(abs(math.log2(c) / gamma + b / gamma))  # |t|_odd as the authors' code rounds it
        assert stage[0].attn.k_size == (t if t % 2 else t + 1)
    if (gamma, b) == (2, 1):
        assert _stage_kernels(name, eca_kernels="paper") == _stage_kernels(name, eca_kernels="paper",
                                                                             attn_kwargs=dict(gamma=2, b=1))


def test_eca_kernels_checkpoint_is_the_default_where_released_and_differs_from_the_paper():
    assert _stage_kernels("resnet50_eca") == _stage_kernels("resnet50_eca", eca_kernels="checkpoint") == (3, 5, 5, 7)
    assert _stage_kernels("resnet50_eca", eca_kernels="paper") == (5, 5, 5, 7)  # C = 256, 512, 1024, 2048
    assert _stage_kernels("resnet18_eca", eca_kernels="paper") == (3, 5, 5, 5)  # C = 64 ... 512
    assert _stage_kernels("resnet20_eca") == _stage_kernels("resnet20_eca", eca_kernels="paper")
    assert _stage_kernels("resnet50_eca", attn_kwargs=dict(k_size=9)) == (9, 9, 9, 9)
    assert _params("resnet50_eca", eca_kernels="paper") - _params("resnet50") == 3 * 5 + 4 * 5 + 6 * 5 + 3 * 7


@pytest.mark.parametrize("name,kwargs,match", [
    ("resnet50_eca", dict(attn_kwargs=dict(gamma=3)),
     r"ResNet: attn_kwargs sets gamma \(eq. 14's kernel rule\), but eca_kernels=None \(the default"),
    ("resnet50_eca", dict(eca_kernels="checkpoint", attn_kwargs=dict(b=2)),
     r"attn_kwargs sets b .* eca_kernels='checkpoint' uses the released per-stage kernels \(3, 5, 5, 7\); "
     r"pass eca_kernels='paper' to use eq. 14"),
    ("resnet20_eca", dict(eca_kernels="checkpoint"), r"eca_kernels='checkpoint' needs the kernel sizes of released"),
    ("resnet50_se", dict(eca_kernels="paper"), r"eca_kernels='paper' sets the kernels of ECA attention only"),
    ("resnet50_eca", dict(eca_kernels="paper", attn_kwargs=dict(k_size=3)), r"k_size=3 fixes one ECA kernel"),
    ("resnet50_eca", dict(eca_kernels="adaptive"), r"eca_kernels must be None or one of \('checkpoint', 'paper'\)"),
])
def test_eca_kernels_refuses_what_it_would_ignore(name, kwargs, match):
    with torch.device("meta"), pytest.raises(ValueError, match=match):
        av.create_model(name, **kwargs)


def test_attention_sits_after_the_last_bn_before_the_addition():
    model = av.create_model("resnet18_se").eval()
    block = model.layer1[0]
    seen = []
    block.bn2.register_forward_hook(lambda m, i, o: seen.append(("bn2", o)))
    block.attn.register_forward_hook(lambda m, i, o: seen.append(("attn", i[0])))
    model(torch.randn(1, 3, 64, 64))
    assert [s[0] for s in seen] == ["bn2", "attn"] and torch.equal(seen[0][1], seen[1][1])


@pytest.mark.parametrize("name", ["resnet18_cbam", "resnet50_bam", "resnext50_32x4d_eca", "mobilenet_v1_se",
                                  "wide_resnet28_10_cbam", "resnet20_bam", "preresnet110_se"])
def test_features_only_gives_one_map_per_stage_at_its_reduction(name):
    model = av.create_model(name, features_only=True).eval()
    h, w = 64, 96
    feats = model(torch.randn(2, 3, h, w))
    assert len(feats) == len(model.feature_info)
    for f, info in zip(feats, model.feature_info):
        assert f.shape == (2, info["num_chs"], h // info["reduction"], w // info["reduction"])
    last = av.create_model(name, features_only=True, out_indices=(-1,))
    assert len(last(torch.randn(2, 3, h, w))) == 1


def test_timm_interface_and_odd_input_sizes():
    model = av.create_model("resnet18_cbam", num_classes=7).eval()
    x = torch.randn(2, 3, 75, 53)
    feats = model.forward_features(x)
    assert feats.shape[1] == model.num_features == 512
    assert model.forward_head(feats, pre_logits=True).shape == (2, 512)
    torch.testing.assert_close(model.forward_head(feats), model(x))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, 512)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and len(cfg["mean"]) == 3 and "Woo" in cfg["paper"]


def test_stride_in_1x1_and_cifar_stem_change_the_layout():
    orig = av.create_model("resnet50", stride_in_1x1=True)
    assert orig.layer2[0].conv1.stride == (2, 2) and orig.layer2[0].conv2.stride == (1, 1)
    tv = av.create_model("resnet50")
    assert tv.layer2[0].conv1.stride == (1, 1) and tv.layer2[0].conv2.stride == (2, 2)
    cifar = av.create_model("resnet18", stem="cifar", num_classes=10)
    assert cifar(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert cifar.feature_info[0]["reduction"] == 1


def test_torchvision_weights_load_into_the_plain_resnet():
    import torchvision

    tv = torchvision.models.resnet18(num_classes=10).eval()
    ours = av.create_model("resnet18", num_classes=10).eval()
    report = av.load_checkpoint(ours, tv.state_dict())
    assert report.source == "attnvision"
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours(x), tv(x))


def test_cifar_resnet_shortcut_is_parameter_free_option_a():
    model = av.create_model("resnet20", num_classes=10)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 0.27
    assert model.layer2[0].downsample is not None and not list(model.layer2[0].downsample.parameters())


def test_model_errors_are_clear():
    with pytest.raises(ValueError, match=r"ResNet: expected input of shape \(B, 3, H, W\), got \(2, 1, 32, 32\)"):
        av.create_model("resnet20")(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="ResNet: stem must be 'imagenet' or 'cifar'"):
        av.create_model("resnet18", stem="tiny")
    with pytest.raises(ValueError, match=r"out_indices must index its 4 feature maps \(-4..3\), got \(4,\)"):
        av.create_model("resnet18", features_only=True, out_indices=(4,))
    assert isinstance(av.create_model("resnet18"), ResNet)


@pytest.mark.parametrize("name", [f"{b}{s}" for b in ("resnext101_32x4d", "wide_resnet18_1_5", "wide_resnet18_2")
                                  for s in ("", "_se", "_cbam")])
def test_cbam_papers_imagenet_table_rows_are_reproduced(name):
    # CBAM paper Table 4, its 1×1-stride layout
    with torch.device("meta"):
        cfg = av.create_model(name).pretrained_cfg
    assert abs(_params(name) / cfg["paper_params"] - 1) < 5e-4
    assert abs(av.profile(name, stride_in_1x1=True).macs / cfg["paper_macs"] - 1) < 3e-3


@pytest.mark.parametrize("name,millions", [("wide_resnet16_8", 11.0), ("resnext29_8x64d", 34.4)])
def test_cifar_backbones_of_the_bam_paper_match_their_own_papers(name, millions):
    assert round(_params(name, num_classes=10) / 1e6, 1) == millions
    model = av.create_model(name, num_classes=10)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)


def test_wide_resnet28_8_is_wide_resnet28_10_at_width_8():
    wrn8 = av.create_model("wide_resnet28_8_bam", num_classes=10)
    wrn10 = av.create_model("wide_resnet28_10", num_classes=10)
    assert ([f["num_chs"] for f in wrn8.feature_info]
            == [w * 8 // 10 for w in (f["num_chs"] for f in wrn10.feature_info)])
    assert sum(isinstance(m, BAM) for m in wrn8.modules()) == 2


# -- initialisation ------------------------------------------------------------------------------

def _he_std(fan: int) -> float:
    return math.sqrt(2.0 / fan)


def _default_bound(m) -> float:
    """PyTorch's default weights (kaiming_uniform, a = √5) lie within ±1/√fan_in."""
    return 1.0 / math.sqrt(m.weight[0].numel())


def test_cbam_resnet_starts_as_the_authors_resnet():
    model = av.create_model("resnet50_cbam")
    cbams = [m for m in model.modules() if isinstance(m, CBAM)]
    assert len(cbams) == 16
    assert all(torch.all(c.spatial.bn.weight == 0) for c in cbams)  # M_s starts at σ(0) = 0.5
    others = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
              and not any(m is c.spatial.bn for c in cbams)]
    assert all(torch.all(m.weight == 1) for m in others)
    biases = [(n, p) for n, p in model.named_parameters() if n.endswith("bias")]
    assert biases and all(torch.all(p == 0) for _, p in biases), [n for n, p in biases if torch.any(p != 0)]
    # the one-output-channel 7×7 convs are He-normal on fan-out (49) too, not PyTorch's default
    w7 = torch.cat([c.spatial.conv.weight.flatten() for c in cbams])
    assert w7.std().item() == pytest.approx(_he_std(49), rel=0.1)
    big = model.layer4[0].conv2  # 512 → 512, 3×3: 2.4 M draws
    assert big.weight.std().item() == pytest.approx(_he_std(9 * 512), rel=0.01)
    assert model.fc.weight.std().item() == pytest.approx(_he_std(2048), rel=0.01)  # He-normal on fan-in
    # the authors' key test ("conv" in the key) leaves the shortcut projections and the MLPs at PyTorch's default
    proj = model.layer3[0].downsample[0]
    assert proj.weight.abs().max().item() <= _default_bound(proj)
    assert proj.weight.std().item() < 0.7 * _he_std(proj.out_channels)
    fc1 = cbams[-1].channel.fc1
    assert fc1.weight.abs().max().item() <= _default_bound(fc1)


def test_bam_resnet_starts_as_the_authors_resnet():
    model = av.create_model("resnet50_bam")
    bams = [m for m in model.modules() if isinstance(m, BAM)]
    assert len(bams) == 3
    finals = torch.cat([b.spatial.body[-1].weight.flatten() for b in bams])  # 1×1 to one channel: fan-out 1
    assert finals.std().item() == pytest.approx(_he_std(1), rel=0.3)
    # the BNs ending the paper's two branches start at 0 (the gate starts as σ(0) = 0.5), every other BN at 1
    gate_norms = [bn for b in bams for bn in b.gate_norms()]
    assert len(gate_norms) == 6 and all(torch.all(bn.weight == 0) for bn in gate_norms)
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))
             and not any(m is bn for bn in gate_norms)]
    assert all(torch.all(m.weight == 1) for m in norms)
    assert all(torch.all(p == 0) for n, p in model.named_parameters() if n.endswith("bias"))
    for b in bams:
        b.keep_attention = True
    model(torch.randn(2, 3, 64, 64))
    assert all(torch.all(b.last_attention == 0.5) for b in bams)
    reduce = bams[-1].spatial.body[0]  # 1024 → 64, 1×1
    assert reduce.weight.std().item() == pytest.approx(_he_std(64), rel=0.02)


def test_torchvision_init_keeps_cbam_spatial_bn_at_one_and_default_biases():
    model = av.create_model("resnet18_cbam", init="torchvision")
    cbam = model.layer4[1].attn
    assert torch.all(cbam.spatial.bn.weight == 1)
    assert torch.any(cbam.channel.fc1.bias != 0) and torch.any(model.fc.bias != 0)
    assert model.fc.weight.abs().max().item() <= _default_bound(model.fc)
    assert model.layer3[0].downsample[0].weight.std().item() == pytest.approx(_he_std(256), rel=0.02)


@pytest.mark.parametrize("name", ["resnet18", "resnet18_se", "resnet18_eca"])
def test_se_eca_and_plain_resnets_authors_init_is_torchvisions(name):
    torch.manual_seed(1)
    authors = av.create_model(name, num_classes=10).state_dict()
    torch.manual_seed(1)
    tv = av.create_model(name, num_classes=10, init="torchvision").state_dict()
    assert all(torch.equal(authors[k], tv[k]) for k in authors)
    assert authors["layer4.1.conv2.weight"].std().item() == pytest.approx(_he_std(9 * 512), rel=0.01)


def test_mobilenet_cbam_starts_as_the_authors_resnets():
    model = av.create_model("mobilenet_v1_cbam", num_classes=10, width_mult=0.5)
    cbams = [m for m in model.modules() if isinstance(m, CBAM)]
    assert cbams and all(torch.all(c.spatial.bn.weight == 0) for c in cbams)
    assert all(torch.all(p == 0) for n, p in model.named_parameters() if n.endswith("bias"))
    tv = av.create_model("mobilenet_v1_cbam", num_classes=10, width_mult=0.5, init="torchvision")
    assert all(torch.all(c.spatial.bn.weight == 1) for c in tv.modules() if isinstance(c, CBAM))


def test_unknown_init_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"ResNet: init must be one of \('authors', 'torchvision'\), got 'he'"):
        av.create_model("resnet18", init="he")
    with pytest.raises(ValueError, match="MobileNetV1: init must be one of"):
        av.create_model("mobilenet_v1", init="he")
