"""Published weights: ``create_model(name, pretrained=True)`` against each publisher's own model, offline.

The download caches are filled with files written by the publishers' code (timm's ``save_for_hf``,
torchvision's ``state_dict`` saved with ``torch.save``; for the authors' layouts, the seeded weights of
the reference fixtures made with the authors' code), random weights in the real architectures. A table
entry's checksum is replaced by the test file's where the test is not about the checksum.
"""
from __future__ import annotations

import argparse
import dataclasses
import fractions
import re
from pathlib import Path

import pytest
import torch
from published_weights import offline_caches, sha256_of

import attnvision as av
from attnvision.layers import BAM
from attnvision.models._base import IMAGENET_MEAN
from attnvision.weights.pretrained import PRETRAINED, WeightsCfg, adapt_input_conv, get_weights, weights_of

timm = pytest.importorskip("timm")
tvm = pytest.importorskip("torchvision.models")
pytest.importorskip("huggingface_hub")

@pytest.fixture
def caches(tmp_path, monkeypatch):
    return offline_caches(tmp_path, monkeypatch)


@pytest.fixture
def patch_weights():
    """``patch_weights(model, tag, **changes)``: that table entry changed for the test, restored after."""
    saved = {}

    def patch(model: str, tag: str, **changes) -> WeightsCfg:
        entries = saved.setdefault(model, weights_of(model))
        PRETRAINED.register(model, tuple(dataclasses.replace(e, **changes) if e.tag == tag else e for e in entries),
                            override=True)
        return get_weights(model, tag)

    yield patch
    for model, entries in saved.items():
        PRETRAINED.register(model, entries, override=True)


def _random_bn_stats(model: torch.nn.Module) -> torch.nn.Module:
    """Running statistics other than (0, 1), so that a BN loaded into the wrong place shows."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _timm_hub_file(tmp_path, arch: str) -> tuple[torch.nn.Module, Path]:
    """timm's model with random weights and the model.safetensors its ``save_for_hf`` writes (the Hub's layout)."""
    model = _random_bn_stats(timm.create_model(arch))
    out = tmp_path / f"{arch}-hf"
    timm.models.save_for_hf(model, str(out), safe_serialization=True)
    return model, out / "model.safetensors"


def _torch_file(tmp_path, model: torch.nn.Module, name: str) -> Path:
    path = tmp_path / name
    torch.save(model.state_dict(), path)
    return path


def _assert_same_logits(ours: torch.nn.Module, theirs: torch.nn.Module, x: torch.Tensor, rel: float = 1e-5):
    with torch.no_grad():
        a, b = ours.eval()(x), theirs.eval()(x)
    assert a.shape == b.shape
    assert ((a - b).abs().max() / b.abs().max()).item() < rel


# -- each publisher's file gives the publisher's model -----------------------------------------

def test_resnet18_default_weights_come_from_timms_hub_copy_and_give_its_logits(caches, tmp_path, patch_weights):
    theirs, file = _timm_hub_file(tmp_path, "resnet18")
    caches.put_hub("timm/resnet18.tv_in1k", "model.safetensors", file)
    patch_weights("resnet18", "tv_in1k", sha256=sha256_of(file))
    model = av.create_model("resnet18", pretrained=True)
    _assert_same_logits(model, theirs, torch.randn(2, 3, 64, 64))
    cfg = model.pretrained_cfg
    assert cfg["tag"] == "tv_in1k" and cfg["hf_hub_id"] == "timm/resnet18.tv_in1k" and cfg["sha256"] == sha256_of(file)
    assert cfg["top1"] == get_weights("resnet18").top1 and cfg["license"] == "bsd-3-clause"


def test_resnet50_se_default_weights_are_timms_seresnet50(caches, tmp_path, patch_weights):
    theirs, file = _timm_hub_file(tmp_path, "seresnet50")
    caches.put_hub("timm/seresnet50.ra2_in1k", "model.safetensors", file)
    model = av.create_model("resnet50_se", pretrained=True)
    _assert_same_logits(model, theirs, torch.randn(2, 3, 64, 64))
    assert model.pretrained_cfg["interpolation"] == "bicubic" and model.pretrained_cfg["tag"] == "ra2_in1k"


def test_legacy_se_weights_by_url_build_the_caffe_layout_and_give_timms_legacy_logits(caches, tmp_path):
    theirs = _random_bn_stats(timm.create_model("legacy_seresnet50"))
    entry = get_weights("resnet50_se", "legacy_in1k")
    caches.put_url(entry.url, _torch_file(tmp_path, theirs, "legacy.pth"))
    model = av.create_model("resnet50_se.legacy_in1k", pretrained=True)
    assert model.maxpool.ceil_mode and model.layer2[0].conv1.stride == (2, 2)  # built as the weights need
    _assert_same_logits(model, theirs, torch.randn(2, 3, 64, 64))


def test_mobilenet_v2_weights_by_url_give_torchvisions_logits(caches, tmp_path, patch_weights):
    theirs = _random_bn_stats(tvm.mobilenet_v2())
    file = _torch_file(tmp_path, theirs, "tv.pth")
    entry = patch_weights("mobilenet_v2", "tv_in1k", url_sha256=sha256_of(file)[:8])
    caches.put_url(entry.url, file)
    model = av.create_model("mobilenet_v2", pretrained="tv_in1k")
    _assert_same_logits(model, theirs, torch.randn(2, 3, 64, 64))
    assert model.pretrained_cfg["url"] == entry.url and model.pretrained_cfg["hf_hub_id"] is None


def test_van_authors_file_with_its_namespace_gives_the_authors_outputs_and_preprocessing(caches, tmp_path,
                                                                                       load_reference):
    ref = load_reference("van_b0.pt")  # the authors' van_b0, 10 classes, seeded weights
    file = tmp_path / "van_tiny_754.pth.tar"
    # timm 0.4's CheckpointSaver layout, which keeps the command line as an argparse.Namespace
    torch.save({"epoch": 299, "arch": "van_b0", "state_dict": ref["state_dict"],
                "args": argparse.Namespace(model="van_b0", lr=1e-3, input_size=None)}, file)
    caches.put_hub("Visual-Attention-Network/VAN-Tiny-original", "van_tiny_754.pth.tar", file)
    model = av.create_model("van_b0", num_classes=10, pretrained=True).eval()
    with torch.no_grad():
        out = model(ref["input"])
    torch.testing.assert_close(out, ref["output_fp32"], rtol=1e-4, atol=5e-5)
    cfg = model.pretrained_cfg
    assert (cfg["mean"], cfg["std"], cfg["crop_pct"], cfg["interpolation"]) == ((0.5,) * 3, (0.5,) * 3, 0.9, "bicubic")
    assert av.create_model("van_b0").pretrained_cfg["mean"] == (0.485, 0.456, 0.406)  # the model's own stays


def test_a_file_holding_other_objects_is_refused_naming_them(caches, tmp_path):
    file = tmp_path / "van_tiny_754.pth.tar"
    torch.save({"state_dict": {"w": torch.ones(1)}, "args": fractions.Fraction(1, 3)}, file)
    caches.put_hub("Visual-Attention-Network/VAN-Tiny-original", "van_tiny_754.pth.tar", file)
    with pytest.raises(ValueError) as err:
        av.create_model("van_b0", pretrained=True)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("create_model: ") and "fractions.Fraction" in msg
    assert "pretrained=PATH" in msg and "weights_only" not in msg


def test_eca_weights_from_google_drive_say_where_and_load_from_a_path(tmp_path, load_reference):
    entry = get_weights("resnet18_eca")
    with pytest.raises(ValueError) as err:
        av.create_model("resnet18_eca", pretrained=True)
    msg = str(err.value)
    assert "\n" not in msg and entry.page in msg
    assert "create_model('resnet18_eca.eca_authors_in1k', pretrained=PATH)" in msg
    ref = load_reference("eca_resnet18_k3577.pt")  # the authors' eca_resnet18, 10 classes
    # their training checkpoint (main.py save_checkpoint): DataParallel keys, the optimizer, and best_prec1, a
    # tensor as their accuracy() returns it
    path = tmp_path / "eca_resnet18_k3577.pth.tar"
    torch.save({"epoch": 100, "arch": "eca_resnet18", "best_prec1": torch.tensor([70.92]), "optimizer": {},
                "state_dict": {f"module.{k}": v for k, v in ref["state_dict"].items()}}, path)
    model = av.create_model("resnet18_eca.eca_authors_in1k", num_classes=10, pretrained=str(path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ref["input"]), ref["output_fp32"], rtol=1e-4, atol=5e-5)
    assert model.pretrained_cfg["tag"] == "eca_authors_in1k" and model.pretrained_cfg["origin_url"] == entry.page


def test_bam_authors_weights_build_the_product_gate_they_need():
    with torch.device("meta"):
        model = av.create_model("resnet50_bam.bam_authors_in1k")
    bams = [m for m in model.stage_attn if isinstance(m, BAM)]
    assert len(bams) == 3 and all(m.combine == "product" for m in bams)
    with pytest.raises(ValueError, match=r"need attn_kwargs=\{'combine': 'product'\}"):
        av.create_model("resnet50_bam.bam_authors_in1k", attn_kwargs=dict(combine="sum"))


# -- fine-tuning and input channels ------------------------------------------------------------

def _mobilenet_in_cache(caches, tmp_path, patch_weights) -> torch.nn.Module:
    theirs = _random_bn_stats(tvm.mobilenet_v2())
    file = _torch_file(tmp_path, theirs, "tv.pth")
    caches.put_url(patch_weights("mobilenet_v2", "tv_in1k", url_sha256=sha256_of(file)[:8]).url, file)
    return theirs


def test_other_num_classes_drops_the_classifier_and_keeps_the_trunk(caches, tmp_path, patch_weights):
    theirs = _mobilenet_in_cache(caches, tmp_path, patch_weights)
    with pytest.warns(UserWarning, match=r"dropped the classifier of another shape \(classifier.weight, "
                                         r"classifier.bias\), initialised for num_classes=7"):
        model = av.create_model("mobilenet_v2", num_classes=7, pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = theirs.eval().features(x).mean((2, 3))  # torchvision's pooled features, before its classifier
        torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True), pooled)
    assert model(x).shape == (2, 7)


def test_one_input_channel_sums_the_rgb_kernels(caches, tmp_path, patch_weights):
    theirs = _mobilenet_in_cache(caches, tmp_path, patch_weights)
    model = av.create_model("mobilenet_v2", in_chans=1, pretrained=True)
    gray = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        ours, rgb = model.eval()(gray), theirs(gray.expand(-1, 3, -1, -1))
    assert ((ours - rgb).abs().max() / rgb.abs().max()).item() < 1e-5  # a grey image as its RGB copy
    assert model.pretrained_cfg["input_size"] == (1, 224, 224) and len(model.pretrained_cfg["mean"]) == 1


def test_more_input_channels_repeat_the_rgb_kernels_scaled(caches, tmp_path, patch_weights):
    theirs = _mobilenet_in_cache(caches, tmp_path, patch_weights)
    model = av.create_model("mobilenet_v2", in_chans=4, pretrained=True)
    first = model.get_submodule(model.pretrained_cfg["first_conv"]).weight
    rgb = theirs.features[0][0].weight
    torch.testing.assert_close(first, torch.cat([rgb, rgb[:, :1]], 1) * 3 / 4)
    torch.testing.assert_close(adapt_input_conv(rgb, 3), rgb)


# -- what goes wrong is one line ---------------------------------------------------------------

def test_offline_without_cache_is_one_line_naming_the_offline_route(caches):
    with pytest.raises(OSError) as err:
        av.create_model("resnet18", pretrained=True)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("create_model: ") and "HF_HUB_OFFLINE" in msg
    assert "https://huggingface.co/timm/resnet18.tv_in1k/resolve/main/model.safetensors" in msg
    assert "create_model('resnet18.tv_in1k', pretrained=PATH)" in msg


def test_a_checksum_mismatch_is_one_line_and_removes_the_file(caches, tmp_path):
    entry = get_weights("mobilenet_v2", "tv_in1k")  # the published url_sha256, not this file's
    cached = caches.put_url(entry.url, _torch_file(tmp_path, tvm.mobilenet_v2(), "tv.pth"))
    digest = sha256_of(cached)
    with pytest.raises(ValueError) as err:
        av.create_model("mobilenet_v2", pretrained=True)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("create_model: ") and entry.url_sha256 in msg and digest in msg
    assert "removed" in msg and not cached.exists()


def test_a_file_in_another_layout_is_one_line_naming_what_it_holds(caches, tmp_path, patch_weights):
    _, file = _timm_hub_file(tmp_path, "resnet10t")  # timm's ResNet-T: a deep stem of three convs
    caches.put_hub("timm/resnet18.tv_in1k", "model.safetensors", file)
    patch_weights("resnet18", "tv_in1k", sha256=sha256_of(file))
    with pytest.raises(ValueError) as err:
        av.create_model("resnet18", pretrained=True)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("create_model: ") and "tv_in1k weights of resnet18" in msg
    assert "conv1.0.weight" in msg, msg  # what the file holds instead of conv1.weight


# -- names, tags and listings ------------------------------------------------------------------

def test_tags_in_the_name_or_in_pretrained_are_the_same_weights():
    with torch.device("meta"):
        a = av.create_model("resnet50.tv2_in1k").pretrained_cfg
        b = av.create_model("resnet50").pretrained_cfg
    assert a["tag"] == "tv2_in1k" and a["crop_pct"] == get_weights("resnet50", "tv2_in1k").crop_pct
    assert "tag" not in b  # a name without a tag and no weights: the model's own cfg
    with pytest.raises(ValueError, match="names the tv2_in1k weights but pretrained='a1_in1k'"):
        av.create_model("resnet50.tv2_in1k", pretrained="a1_in1k")
    with pytest.raises(ValueError, match=r"unknown name 'tv3_in1k'; did you mean .*'tv2_in1k'"):
        av.create_model("resnet50.tv3_in1k")
    with pytest.raises(FileNotFoundError, match=r"neither a file nor a tag .*did you mean 'tv_in1k'"):
        av.create_model("resnet50", pretrained="tv_in1kk")
    with pytest.raises(ValueError, match="'coatnet_0' has no published weights"):
        av.create_model("coatnet_0", pretrained=True)


def test_a_tag_that_is_also_a_file_here_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tv_in1k").write_bytes(b"")
    with pytest.raises(ValueError, match=r"both a tag .* and a file here; pass './tv_in1k'"):
        av.create_model("resnet18", pretrained="tv_in1k")


def test_list_models_pretrained_lists_the_fetchable_weights_with_tags_as_timm():
    tagged = av.list_models(pretrained=True)
    assert tagged == sorted(tagged) and "resnet50.tv_in1k" in tagged and "van_b0.authors_in1k" in tagged
    expected = sorted(f"{m}.{w.tag}" for m in PRETRAINED for w in weights_of(m) if w.hf_hub_id or w.url)
    assert tagged == expected
    assert not [n for n in tagged if n.startswith(("coatnet", "resnet18_eca", "resnet50_cbam", "resnet50_bam"))]
    plain = av.list_models(pretrained=True, include_tags=False)
    assert plain == sorted({n.partition(".")[0] for n in tagged}) and "resnet18_eca" not in plain
    assert av.list_models("resnet50*", pretrained=True) == [
        "resnet50.a1_in1k", "resnet50.tv2_in1k", "resnet50.tv_in1k",
        "resnet50_se.a1_in1k", "resnet50_se.legacy_in1k", "resnet50_se.ra2_in1k"]
    assert av.list_models("*.tv2_in1k", pretrained=True, exclude_filters="resnet1*") == [
        "mobilenet_v2.tv2_in1k", "resnet50.tv2_in1k"]
    assert "resnet18_eca.eca_authors_in1k" in av.list_models("resnet18*", include_tags=True)  # every tag


@pytest.mark.parametrize("name", av.list_models(pretrained=True))
def test_every_listed_name_builds_with_its_weights_settings(name):
    model, tag = name.split(".")
    entry = get_weights(model, tag)
    with torch.device("meta"):
        built = av.create_model(name)
    cfg = built.pretrained_cfg
    assert (cfg["tag"], cfg["top1"], cfg["mean"], cfg["crop_pct"]) == (tag, entry.top1, entry.mean, entry.crop_pct)
    assert entry.hf_hub_id or entry.url
    assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
    assert entry.url_sha256 is None or entry.url_sha256 in entry.url  # torchvision names files by it


def test_in_chans_reaches_every_size_of_the_weights_cfg():
    with torch.device("meta"):
        cfg = av.create_model("resnet50.a1_in1k", in_chans=1).pretrained_cfg
    assert cfg["input_size"] == (1, 224, 224) and cfg["test_input_size"] == (1, 288, 288)
    assert cfg["interpolation"] == "bicubic" and cfg["mean"] == pytest.approx((sum(IMAGENET_MEAN) / 3,))
