"""Segmenters: both heads on every family give logits at the input resolution and train; the heads
follow their papers' structure; profiling counts whole dense models."""
from __future__ import annotations

import pytest
import torch
from tiny_backbones import SIZE

import attnvision as av
from attnvision.dense import create_segmenter
from attnvision.dense.segmentation import SemanticFPNHead, UperNetHead
from attnvision.tasks.dense import SegmentationTask

HEAD = {"semantic_fpn": dict(fpn_channels=32, channels=32, groups=8), "upernet": dict(channels=16)}


@pytest.mark.parametrize("arch", ["semantic_fpn", "upernet"])
def test_both_heads_on_every_family_give_input_resolution_logits_and_train(arch, family):
    name, backbone = family
    model = create_segmenter(arch, backbone, 5, **HEAD[arch])
    x = torch.rand(2, 3, SIZE, SIZE)
    target = torch.randint(0, 5, (2, SIZE, SIZE))
    target[:, :4] = 255
    task = SegmentationTask()
    loss = task.train_step(model.train(), (x, target))
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.body.parameters()), name
    assert model.eval()(x).shape == (2, 5, SIZE, SIZE)
    metrics = task.evaluate_loader(model, [(x, target)])
    assert 0 <= metrics["pixel_acc"] <= 1 and len(metrics["per_class_iou"]) == 5


def test_semantic_fpn_brings_each_level_to_stride_4_with_log2_upsampling_blocks():
    head = SemanticFPNHead([8, 16, 32, 64], [4, 8, 16, 32], 3, fpn_channels=32, channels=16, groups=8)
    upsamplings = [sum(isinstance(m, torch.nn.Upsample) for m in h) for h in head.scale_heads]
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in h.modules()) for h in head.scale_heads]
    assert upsamplings == [0, 1, 2, 3] and convs == [1, 1, 2, 3]  # Panoptic FPN Fig. 3
    maps = [torch.rand(1, c, 64 // s, 64 // s) for c, s in zip([8, 16, 32, 64], [4, 8, 16, 32])]
    assert head(maps).shape == (1, 3, 16, 16)


def test_upernet_pools_the_last_stage_at_bins_1_2_3_6_and_fuses_every_level():
    head = UperNetHead([8, 16, 32, 64], 3, channels=16)
    assert [b[0].output_size for b in head.ppm] == [1, 2, 3, 6]
    assert head.bottleneck[0].in_channels == 64 + 4 * 16
    assert head.fuse[0].in_channels == 4 * 16
    maps = [torch.rand(2, c, 64 // s, 64 // s) for c, s in zip([8, 16, 32, 64], [4, 8, 16, 32])]
    assert head.eval()(maps).shape == (2, 3, 16, 16)


def test_segmenter_rejects_a_bad_arch_and_unbatched_images():
    with pytest.raises(ValueError, match="deeplab"):
        create_segmenter("deeplab", "resnet20", 3)
    model = create_segmenter("upernet", "resnet20", 3, channels=8)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.rand(3, 32, 32))


def test_profile_counts_a_whole_segmenter_and_detector():
    seg = create_segmenter("upernet", "resnet20", 3, channels=8)
    p = av.profile(seg, (1, 3, 32, 32))
    body = av.profile(seg.body, (1, 3, 32, 32))
    assert p.params == sum(q.numel() for q in seg.parameters()) and p.macs > body.macs > 0
    det = av.create_detector("fcos", "resnet20", 3, min_size=32, max_size=32, fpn_channels=32)
    pd = av.profile(det, (1, 3, 32, 32))  # torchvision detectors take a batch tensor as a list of images
    assert pd.params == sum(q.numel() for q in det.parameters())
    assert pd.macs > av.profile(det.backbone, (1, 3, 32, 32)).macs
