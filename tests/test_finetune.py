"""Fine-tuning from other people's weights: a classifier of another shape is dropped, a plain
network's checkpoint initialises an attention variant, timm's SE-ResNets and Hugging Face's VAN
load with equal outputs, and a run's weights file rebuilds its model."""
from __future__ import annotations

import json

import pytest
import timm
import torch
from torch import nn

import attnvision as av
from attnvision import create_model, load_checkpoint, load_model
from attnvision.weights import attention_prefixes


def _randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Running statistics and affine parameters away from their identity initialisation, so that an
    output comparison also checks that every BN tensor landed in its place."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.normal_(1, 0.1)
            m.bias.data.normal_(0, 0.1)
    return model.eval()


def _same_outputs(ours: nn.Module, peer: nn.Module, size: int = 64):
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        a, b = ours.eval()(x), peer.eval()(x)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    return a


# -- a classifier of another shape -------------------------------------------------------------

def test_create_model_drops_a_classifier_of_another_shape_and_warns(tmp_path):
    source = create_model("resnet18")
    path = tmp_path / "resnet18.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    with pytest.warns(UserWarning, match=r"dropped the classifier of another shape \(fc\.weight, fc\.bias\), "
                                         r"initialised for num_classes=10"):
        model = create_model("resnet18", num_classes=10, pretrained=str(path))
    assert model.fc.weight.shape == (10, 512)
    trunk = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trunk.items())


def test_load_checkpoint_reports_the_dropped_head_and_refuses_it_unless_asked():
    sd = create_model("resnet18").state_dict()
    model = create_model("resnet18", num_classes=7)
    with pytest.raises(ValueError, match="fc.weight: checkpoint \\(1000, 512\\) vs model \\(7, 512\\).*"
                                         "pass drop_mismatched_head=True"):
        load_checkpoint(model, sd)
    report = load_checkpoint(model, sd, drop_mismatched_head=True)
    assert report.dropped_keys == ("fc.weight", "fc.bias") and report.missing_keys == [] == report.unexpected_keys


def test_a_model_without_classifier_drops_the_checkpoint_classifier(tmp_path):
    sd = create_model("resnet18").state_dict()
    torch.save(sd, tmp_path / "resnet18.pth")
    with pytest.warns(UserWarning, match=r"dropped the checkpoint's classifier \(fc\.weight, fc\.bias\): "
                                         r"the model has none"):
        create_model("resnet18", num_classes=0, pretrained=str(tmp_path / "resnet18.pth"))
    model = create_model("resnet18", num_classes=0)
    with pytest.raises(ValueError, match="unexpected 2 keys: fc.weight, fc.bias"):
        load_checkpoint(model, sd)
    report = load_checkpoint(model, sd, drop_mismatched_head=True)
    assert report.dropped_keys == ("fc.weight", "fc.bias") and report.unexpected_keys == []
    assert torch.equal(model.layer4[1].conv2.weight, sd["layer4.1.conv2.weight"])


def test_drop_mismatched_head_still_refuses_a_mismatch_in_the_trunk():
    sd = create_model("resnet18").state_dict()
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight: checkpoint \(64, 64, 1, 1\)"):
        load_checkpoint(create_model("resnet18", num_classes=7), sd, drop_mismatched_head=True)


# -- a plain network's checkpoint into an attention variant ------------------------------------

@pytest.mark.parametrize("peer", ["torchvision", "timm"])
@pytest.mark.parametrize("attn", ["se", "eca", "bam", "cbam"])
def test_plain_resnet_checkpoint_initialises_the_trunk_of_each_attention_variant(peer, attn):
    if peer == "torchvision":
        import torchvision
        sd = torchvision.models.resnet18().state_dict()
    else:
        sd = timm.create_model("resnet18", pretrained=False).state_dict()
    model = create_model(f"resnet18_{attn}", num_classes=10)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="missing"):
        load_checkpoint(model, sd, drop_mismatched_head=True)
    report = load_checkpoint(model, sd, drop_mismatched_head=True, fresh_attention=True)
    prefixes = tuple(attention_prefixes(model))
    attention = [k for k in model.state_dict() if k.startswith(prefixes)]
    assert attention and list(report.fresh_keys) == attention and report.missing_keys == []
    assert all(torch.equal(model.state_dict()[k], init[k]) for k in attention)  # fresh: as initialised
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items() if not k.startswith("fc."))


def test_create_model_from_a_plain_checkpoint_names_the_fresh_attention_keys(tmp_path):
    import torchvision
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.warns(UserWarning, match=r"no attention weights: 80 attention tensors keep their initialisation "
                                         r"\(layer1\.0\.attn\.channel\.fc1\.weight"):
        create_model("resnet18_cbam", num_classes=10, pretrained=str(path))


def test_fresh_attention_refuses_a_checkpoint_with_only_some_attention_weights():
    sd = create_model("resnet18_se").state_dict()
    del sd["layer2.1.attn.fc1.weight"]
    with pytest.raises(ValueError, match=r"missing 1 keys: layer2\.1\.attn\.fc1\.weight"):
        load_checkpoint(create_model("resnet18_se"), sd, fresh_attention=True)


# -- timm's SE-ResNets -------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("peer, ours, kwargs", [
    ("seresnet50", "resnet50_se", {}),
    ("legacy_seresnet50", "resnet50_se", dict(stride_in_1x1=True, stem_pool="ceil")),
    ("legacy_seresnext50_32x4d", "resnext50_32x4d_se", dict(stem_pool="ceil")),
])
def test_timm_se_resnet_checkpoint_gives_equal_outputs(peer, ours, kwargs):
    reference = _randomise_batchnorm(timm.create_model(peer, pretrained=False))
    model = create_model(ours, **kwargs)
    report = load_checkpoint(model, reference.state_dict())
    assert report.source == "official" and report.missing_keys == [] == report.unexpected_keys
    _same_outputs(model, reference)


@pytest.mark.parametrize("kwargs, message", [
    (dict(stride_in_1x1=True), "build ResNet with stem_pool='ceil'"),
    (dict(stem_pool="ceil"), "build ResNet with stride_in_1x1=True"),
])
def test_timm_legacy_se_resnet_names_the_layout_the_model_needs(kwargs, message):
    sd = timm.create_model("legacy_seresnet50", pretrained=False).state_dict()
    with pytest.raises(ValueError, match=message):
        load_checkpoint(create_model("resnet50_se", **kwargs), sd)


def test_timm_legacy_basic_block_se_resnet_is_refused_with_the_reason():
    sd = timm.create_model("legacy_seresnet18", pretrained=False).state_dict()
    with pytest.raises(ValueError, match="SEResNetBlock applies a ReLU after bn2, before the SE"):
        load_checkpoint(create_model("resnet18_se", stem_pool="ceil"), sd)


def test_timm_se_checkpoint_into_a_model_without_se_is_refused():
    sd = timm.create_model("seresnet18", pretrained=False).state_dict()
    with pytest.raises(ValueError, match="holds SE modules .* has attn='cbam'; build the \\*_se model"):
        load_checkpoint(create_model("resnet18_cbam"), sd)


def test_timm_seresnet18_hidden_width_differs_in_the_first_stage():
    # timm rounds the SE width to a multiple of 8 (64 / 16 = 4 -> 8); the SE paper's is C / 16
    sd = timm.create_model("seresnet18", pretrained=False).state_dict()
    with pytest.raises(ValueError, match=r"layer1\.0\.attn\.fc1\.weight: checkpoint \(8, 64\) vs model \(4, 64\)"):
        load_checkpoint(create_model("resnet18_se"), sd)


@pytest.mark.parametrize("peer", ["ecaresnet50d", "ecaresnetlight"])
def test_timm_eca_resnets_with_other_stems_or_shortcuts_are_refused_with_the_reason(peer):
    sd = timm.create_model(peer, pretrained=False).state_dict()
    with pytest.raises(ValueError, match="deep stem of three 3×3 convs .* or average-pool shortcuts"):
        load_checkpoint(create_model("resnet50_eca"), sd)


def test_stem_pool_rejects_an_unknown_value():
    with pytest.raises(ValueError, match="ResNet: stem_pool must be 'pad' or 'ceil', got 'max'"):
        create_model("resnet18", stem_pool="max")


# -- Hugging Face VAN --------------------------------------------------------------------------

def _hf_van(tmp_path, safe: bool = True, **config):
    import transformers  # the test extra installs it

    cfg = transformers.VanConfig(hidden_sizes=[32, 64, 160, 256], depths=[3, 3, 5, 2], num_labels=10,
                                 layer_scale_init_value=0.5, **config)
    reference = transformers.VanForImageClassification(cfg)
    _randomise_batchnorm(reference)
    folder = tmp_path / "van"
    reference.save_pretrained(folder, safe_serialization=safe)
    return reference, folder


@pytest.mark.parametrize("safe", [True, False], ids=["model.safetensors", "pytorch_model.bin"])
def test_hugging_face_van_folder_gives_equal_logits(tmp_path, safe):
    reference, folder = _hf_van(tmp_path, safe)
    assert (folder / ("model.safetensors" if safe else "pytorch_model.bin")).is_file()
    model = load_model(folder)
    assert model.num_classes == 10 and model.cfg.dims == (32, 64, 160, 256)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(x).logits
        torch.testing.assert_close(model.eval()(x), expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(create_model("van_b0", num_classes=10, pretrained=str(folder)).eval()(x),
                                   expected, rtol=1e-4, atol=1e-4)


def test_hugging_face_van_config_of_no_variant_is_refused(tmp_path):
    _, folder = _hf_van(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, depths=[1, 1, 1, 1])))
    with pytest.raises(ValueError, match=r"depths=\[1, 1, 1, 1\].* is none of van_b0"):
        load_model(folder)
    (folder / "config.json").write_text(json.dumps(dict(config, hidden_act="relu")))
    with pytest.raises(ValueError, match="hidden_act='relu' \\(ours: 'gelu'\\)"):
        load_model(folder)


def test_load_model_refuses_a_folder_without_weights_or_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "van"}))
    with pytest.raises(FileNotFoundError, match="holds neither model.safetensors nor pytorch_model.bin"):
        load_checkpoint(create_model("van_b0"), tmp_path)


# -- a run's weights rebuild their model -------------------------------------------------------

def test_load_model_rebuilds_a_trained_run_from_its_weights_file_alone(tmp_path):
    from attnvision.data import create_dataset
    from attnvision.train import TrainConfig, evaluate, train
    cfg = TrainConfig(model="resnet20", model_kwargs=dict(stem="imagenet"), attach="se", data="digits", epochs=1,
                      batch_size=64, lr=0.05, progress=False, threads=1, out=str(tmp_path / "run"))
    summary = train(cfg)
    lone = tmp_path / "elsewhere" / "best.safetensors"
    lone.parent.mkdir()
    lone.write_bytes((tmp_path / "run" / "best.safetensors").read_bytes())
    model = load_model(lone)
    assert model.num_classes == 10 and model.in_chans == 1 and model.pretrained_cfg["input_size"] == (1, 32, 32)
    # the trainer's own validation of the trained model, reproduced by the rebuilt one
    assert evaluate(model, create_dataset("digits", "val")).acc1 == pytest.approx(summary["best_val_acc1"], abs=1e-6)
    by_hand = create_model("resnet20", num_classes=10, in_chans=1, stem="imagenet")
    av.attach(by_hand, "se")
    load_checkpoint(by_hand, tmp_path / "run" / "best.safetensors")
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), by_hand.eval()(x), rtol=0, atol=0)


def test_load_model_refuses_weights_without_a_model_record(tmp_path):
    from attnvision.train.checkpoints import save_weights
    save_weights(tmp_path / "w.safetensors", create_model("resnet20").state_dict())
    with pytest.raises(ValueError, match="holds no model record"):
        load_model(tmp_path / "w.safetensors")
    torch.save(create_model("resnet20").state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match="a plain weights file does not say which model it is"):
        load_model(tmp_path / "w.pt")
