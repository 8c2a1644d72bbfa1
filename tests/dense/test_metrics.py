"""Dense metrics: COCO AP through torchmetrics/pycocotools on cases whose AP is known, and the
segmentation confusion matrix against a hand-checked one."""
from __future__ import annotations

import math

import pytest
import torch

from attnvision.dense import DetectionMetrics, SegmentationMetrics


def _box_target(boxes, labels, size=64):
    masks = torch.zeros(len(boxes), size, size, dtype=torch.uint8)
    for m, (x0, y0, x1, y1) in zip(masks, boxes):
        m[y0:y1, x0:x1] = 1
    return dict(boxes=torch.tensor(boxes, dtype=torch.float32), labels=torch.tensor(labels), masks=masks)


def test_detection_ap_is_one_for_exact_hits_and_half_when_half_the_objects_are_missed():
    target = _box_target([(2, 2, 20, 20), (30, 30, 60, 62)], [1, 2])
    exact = dict(boxes=target["boxes"], scores=torch.tensor([0.9, 0.8]), labels=target["labels"],
                 masks=target["masks"][:, None].float())
    metrics = DetectionMetrics(masks=True)
    metrics.update([exact], [target])
    out = metrics.compute()
    assert out["map"] == pytest.approx(1.0) and out["mask_map"] == pytest.approx(1.0)
    assert out["map_large"] == -1.0  # no large objects: COCO's "undefined"
    half = DetectionMetrics()
    one = {k: v[:1] for k, v in exact.items()}
    two = _box_target([(2, 2, 20, 20), (30, 30, 60, 62)], [1, 1])
    half.update([dict(one, labels=torch.tensor([1]))], [two])
    assert half.compute()["map_50"] == pytest.approx(0.5, abs=0.01)  # recall 1/2 at precision 1
    with pytest.raises(ValueError, match="2 targets"):
        half.update([one], [target, target])


def test_segmentation_metrics_match_a_hand_checked_confusion():
    metrics = SegmentationMetrics(3, ignore_index=255)
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    metrics.update(pred[None], target[None])
    out = metrics.compute()
    cm = metrics.confusion
    assert cm.sum() == 6 and cm.trace() == 4  # the two ignored pixels do not count
    expected = [(cm[c, c] / (cm[c].sum() + cm[:, c].sum() - cm[c, c])).item() for c in range(3)]
    assert out["per_class_iou"] == pytest.approx(expected)
    assert out["miou"] == pytest.approx(sum(expected) / 3) and out["pixel_acc"] == pytest.approx(4 / 6)
    logits = torch.nn.functional.one_hot(pred, 3).permute(2, 0, 1)[None].float()
    again = SegmentationMetrics(3)
    again.update(logits, target[None])
    assert again.compute()["miou"] == pytest.approx(out["miou"])
    assert math.isnan(SegmentationMetrics(2).compute()["miou"])
    with pytest.raises(ValueError, match="target classes"):
        metrics.update(pred[None], torch.full_like(target, 7)[None])
