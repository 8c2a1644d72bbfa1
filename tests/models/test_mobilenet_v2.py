"""MobileNetV2 with attention: torchvision's architecture exactly, the ECA authors' placement and kernels,
their initialisation, and the ECA paper's parameter count."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import attnvision as av
from attnvision.layers import BAM, CBAM, ECA, SE
from attnvision.models.mobilenet_v2 import INVERTED_RESIDUAL_SETTING, InvertedResidual

KINDS = {"se": SE, "eca": ECA, "cbam": CBAM}


@pytest.mark.parametrize("width_mult", [1.0, 0.5])
def test_torchvision_weights_load_and_give_its_outputs(width_mult):
    tv = torchvision.models.mobilenet_v2(num_classes=7, width_mult=width_mult).eval()
    ours = av.create_model("mobilenet_v2", num_classes=7, width_mult=width_mult).eval()
    report = av.load_checkpoint(ours, tv.state_dict(), source="official")
    assert report.missing_keys == [] and report.unexpected_keys == []
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=0, atol=0)


def _eca_keys_of_the_authors_model():
    """The ECA authors' extra keys: one k-tap conv per block, after the projection's BN; k = 1 below 96 channels,
    3 from 96 up (BangguWu/ECANet ``models/eca_mobilenetv2.py``: ``ksize = 1 if c < 96 else 3``)."""
    keys, index = {}, 1
    for t, c, n, _ in INVERTED_RESIDUAL_SETTING:
        for _ in range(n):
            position = 4 if t != 1 else 3  # [expand,] depth-wise, project conv, BN, ECA
            keys[f"features.{index}.conv.{position}.conv.weight"] = (1, 1, 1 if c < 96 else 3)
            index += 1
    return keys


def test_eca_sits_where_the_authors_put_it_with_their_kernels():
    ours = av.create_model("mobilenet_v2_eca")
    plain = {k.replace("classifier.1.", "classifier."): v
             for k, v in torchvision.models.mobilenet_v2().state_dict().items()}
    extra = {k: tuple(v.shape) for k, v in ours.state_dict().items() if k not in plain}
    assert extra == _eca_keys_of_the_authors_model()
    with torch.device("meta"):
        base = sum(p.numel() for p in av.create_model("mobilenet_v2").parameters())
    # k = 1 in the 10 blocks of 16 to 64 channels, 3 in the 7 of 96 to 320
    assert sum(p.numel() for p in ours.parameters()) - base == 10 * 1 + 7 * 3


def test_parameter_counts_round_to_the_eca_papers_units_of_2_to_the_20():
    for name in ("mobilenet_v2", "mobilenet_v2_eca"):
        with torch.device("meta"):
            model = av.create_model(name)
        params = sum(p.numel() for p in model.parameters())
        assert round(params / 2 ** 20, 2) == 3.34
        assert model.pretrained_cfg["paper_params"] == pytest.approx(3.34 * 2 ** 20)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_block_attention_refines_the_projection_before_the_addition(kind):
    model = av.create_model(f"mobilenet_v2_{kind}", num_classes=3)
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17
    assert all(isinstance(b.conv[-1], KINDS[kind]) and isinstance(b.conv[-2], nn.BatchNorm2d) for b in blocks)
    x = torch.randn(1, 3, 32, 32)
    seen = []
    blocks[2].conv[-1].register_forward_hook(lambda m, i, o: seen.append((i[0], o)))
    model.eval()(x)
    assert blocks[2].use_residual and seen and not torch.equal(seen[0][0], seen[0][1])


def test_bam_sits_after_every_stride_stage_but_the_last():
    model = av.create_model("mobilenet_v2_bam", num_classes=3)
    bams = [m for m in model.stage_attn if isinstance(m, BAM)]
    assert [b.channels for b in bams] == [16, 24, 32, 96]
    assert isinstance(model.stage_attn[-1], nn.Identity)
    assert not any(isinstance(m, BAM) for m in model.features.modules())


def test_stage_maps_have_their_stated_widths_and_strides_at_any_size():
    model = av.create_model("mobilenet_v2_cbam", num_classes=3).eval()
    x = torch.randn(2, 3, 70, 50)
    maps = model.forward_intermediates(x, intermediates_only=True)
    for m, info in zip(maps, model.feature_info):
        assert m.shape[1] == info["num_chs"]
        assert m.shape[2:] == tuple(-(-s // info["reduction"]) for s in x.shape[2:])
    assert model.forward_features(x).shape[1] == model.num_features == 1280
    feats = av.create_model("mobilenet_v2_cbam", features_only=True, out_indices=(1, 3))(x)
    assert [f.shape[1] for f in feats] == [24, 96]


def test_initialisation_is_the_authors():
    torch.manual_seed(0)
    model = av.create_model("mobilenet_v2_se")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            assert torch.all(m.bias == 0)
    conv = model.features[-1][0]  # 320 -> 1280, fan_out = 1280
    assert conv.weight.std().item() == pytest.approx((2 / 1280) ** 0.5, rel=0.02)
    assert model.classifier.weight.std().item() == pytest.approx(0.01, rel=0.02)


def test_bam_and_cbam_modules_start_as_the_bam_cbam_authors_unless_asked_otherwise():
    spatial_bns = lambda m: [g.bn for g in m.modules() if type(g).__name__ == "CBAMSpatialGate"]  # noqa: E731
    assert all(torch.all(bn.weight == 0) for bn in spatial_bns(av.create_model("mobilenet_v2_cbam")))
    assert all(torch.all(bn.weight == 1)
               for bn in spatial_bns(av.create_model("mobilenet_v2_cbam", init="torchvision")))
    bam = next(m for m in av.create_model("mobilenet_v2_bam").modules() if isinstance(m, BAM))
    assert all(torch.all(p == 0) for n, p in bam.named_parameters() if n.endswith("bias") and "bn" not in n)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="MobileNetV2: attn: unknown name 'sse'; did you mean 'se'"):
        av.create_model("mobilenet_v2", attn="sse")
    with pytest.raises(ValueError, match="MobileNetV2: width_mult"):
        av.create_model("mobilenet_v2", width_mult=0)
    with pytest.raises(ValueError, match=r"MobileNetV2: expected input of shape \(B, 3, H, W\)"):
        av.create_model("mobilenet_v2", num_classes=2)(torch.randn(1, 1, 32, 32))
