"""What a training loop needs per dense task, as plain objects: build the model, collate a batch,
take one loss, evaluate a loader.

``task.build_model(cfg)`` reads a mapping (``arch``, ``backbone``, ``num_classes`` and the keyword
arguments of :func:`create_detector` / :func:`create_segmenter`); ``task.collate_fn`` batches the
dataset items of :mod:`attnvision.data.dense`; ``task.train_step(model, batch)`` returns the scalar loss
to back-propagate (the model in train mode); ``task.evaluate(model, loader)`` returns a flat dict of
metrics (the model in eval mode, no gradients).
"""
from __future__ import annotations

from functools import partial
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dense import IGNORE_INDEX, detection_collate, segmentation_collate
from .detection import create_detector
from .metrics import DetectionMetrics, SegmentationMetrics
from .segmentation import create_segmenter


def _build_args(task: str, cfg: Mapping) -> tuple[str, object, int, dict]:
    missing = [k for k in ("arch", "backbone", "num_classes") if k not in cfg]
    if missing:
        raise ValueError(f"{task}: the model config needs {missing}, got keys {sorted(cfg)}")
    rest = {k: v for k, v in cfg.items() if k not in ("arch", "backbone", "num_classes")}
    return cfg["arch"], cfg["backbone"], cfg["num_classes"], rest


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class DetectionTask:
    """Detection with torchvision's detectors: the loss is the sum of the model's loss dict."""

    name = "detection"
    collate_fn = staticmethod(detection_collate)

    def build_model(self, cfg: Mapping) -> nn.Module:
        arch, backbone, num_classes, rest = _build_args(self.name, cfg)
        return create_detector(arch, backbone, num_classes, **rest)

    def losses(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        images, targets = batch
        device = _device(model)
        images = [img.to(device) for img in images]
        targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
        return model(images, targets)

    def train_step(self, model: nn.Module, batch) -> torch.Tensor:
        return sum(self.losses(model, batch).values())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable) -> dict[str, float]:
        was_training = model.training
        model.eval()
        metrics = DetectionMetrics(masks=getattr(model, "arch", None) == "maskrcnn")
        try:
            for images, targets in loader:
                preds = model([img.to(_device(model)) for img in images])
                metrics.update(preds, targets)
        finally:
            model.train(was_training)
        return metrics.compute()


class SegmentationTask:
    """Semantic segmentation: pixel-wise cross-entropy ignoring ``ignore_index``."""

    name = "segmentation"

    def __init__(self, ignore_index: int = IGNORE_INDEX):
        self.ignore_index = ignore_index
        self.collate_fn = partial(segmentation_collate, ignore_index=ignore_index)

    def build_model(self, cfg: Mapping) -> nn.Module:
        arch, backbone, num_classes, rest = _build_args(self.name, cfg)
        return create_segmenter(arch, backbone, num_classes, **rest)

    def train_step(self, model: nn.Module, batch) -> torch.Tensor:
        images, masks = batch
        device = _device(model)
        return F.cross_entropy(model(images.to(device)), masks.to(device), ignore_index=self.ignore_index)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable) -> dict:
        was_training = model.training
        model.eval()
        metrics = SegmentationMetrics(model.num_classes, self.ignore_index)
        try:
            for images, masks in loader:
                metrics.update(model(images.to(_device(model))), masks.to(_device(model)))
        finally:
            model.train(was_training)
        return metrics.compute()


TASKS = {"detection": DetectionTask, "segmentation": SegmentationTask}
