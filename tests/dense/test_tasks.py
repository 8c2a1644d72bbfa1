"""The per-task pieces fit a batch of cluttered digits: a detector's mAP50 and a segmenter's mIoU on the
batch rise from nothing to most of the way after a few dozen steps of ``train_step``."""
from __future__ import annotations

import pytest
import torch
from tiny_backbones import BUILDERS

from attnvision.data.dense import ClutteredDigitsDense
from attnvision.tasks.dense import DetectionTask, SegmentationTask


def _fit(task, cfg, kind: str, metric: str, steps: int, lr: float) -> tuple[float, float]:
    model = task.create(dict(cfg, backbone=BUILDERS["resnet_cbam"](), num_classes=11))
    data = ClutteredDigitsDense("val", kind, length=8)
    batch = task.collate_fn([data[i] for i in range(len(data))])
    before = task.evaluate_loader(model, [batch])[metric]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = task.train_step(model.train(), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, task.evaluate_loader(model, [batch])[metric]


@pytest.mark.slow
def test_segmentation_task_fits_a_batch_of_cluttered_digits():
    before, after = _fit(SegmentationTask(), dict(arch="semantic_fpn", fpn_channels=32, channels=32, groups=8),
                         "segmentation", "miou", steps=60, lr=1e-2)
    assert before < 0.1 and after > 0.5, (before, after)


@pytest.mark.slow
def test_detection_task_fits_a_batch_of_cluttered_digits():
    before, after = _fit(DetectionTask(), dict(arch="fcos", min_size=64, max_size=64, fpn_channels=32),
                         "detection", "map_50", steps=60, lr=3e-3)
    assert before < 0.1 and after > 0.5, (before, after)
