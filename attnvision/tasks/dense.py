"""Detection and segmentation as tasks of the training loop (:mod:`attnvision.train.tasks`).

``attnvision train --task detection --model fasterrcnn --backbone resnet18_cbam --data cluttered-digits-det``
trains ``create_detector("fasterrcnn", "resnet18_cbam", num_classes)`` with torchvision's losses (their sum is
the loss), and evaluates COCO AP after every epoch (``val_map`` marks the best weights); ``--task segmentation
--model semantic_fpn`` trains ``create_segmenter`` with pixel-wise cross-entropy that skips ``ignore_index``
and evaluates mIoU (``val_miou`` marks the best) and pixel accuracy.

``TrainConfig.model`` is the head's ``arch``, ``backbone`` the backbone's name, ``model_kwargs`` the keyword
arguments of :func:`create_detector` / :func:`create_segmenter` (``fpn_channels``, ``backbone_kwargs``, ...);
``min_size``/``max_size`` (detection; default: the built-in canvases' own 64 pixels, else torchvision's 800
and 1333) and ``trainable_stages`` are fields of their own. ``attach`` retrofits attention into the backbone
before the head is put on it.

Evaluation with several processes: each rank predicts its shard of the validation set; detections are
gathered (in dataset order) and scored by every rank, confusion matrices are summed, so every rank reports
the numbers of one process.

The pieces stand alone too: ``task.create(spec)`` builds a model from a mapping (``arch``, ``backbone``,
``num_classes`` and keyword arguments), ``task.train_step(model, batch)`` gives the loss of a batch
made by ``task.collate_fn``, ``task.evaluate_loader(model, loader)`` the metrics of a loader's batches.
"""
from __future__ import annotations

import time
from functools import partial
from typing import Iterable, Mapping, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..attach import attach as attach_attention
from ..data import create_dataset, parse_spec
from ..data.dense import IGNORE_INDEX, detection_collate, segmentation_collate
from ..dense.detection import create_detector
from ..dense.metrics import DetectionMetrics, SegmentationMetrics
from ..dense.segmentation import create_segmenter
from ..factory import create_model
from ..train.distributed import Dist, all_gather_objects, all_sum
from ..train.evaluate import Shard
from ..train.tasks import Task


def _build_args(task: str, cfg: Mapping) -> tuple[str, object, int, dict]:
    missing = [k for k in ("arch", "backbone", "num_classes") if k not in cfg]
    if missing:
        raise ValueError(f"{task}: the model config needs {missing}, got keys {sorted(cfg)}")
    rest = {k: v for k, v in cfg.items() if k not in ("arch", "backbone", "num_classes")}
    return cfg["arch"], cfg["backbone"], cfg["num_classes"], rest


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class DenseTask(Task):
    """What detection and segmentation share: the backbone and head from the config, the data from its spec."""

    train_columns = ("train_loss",)
    size_fields: tuple[str, ...] = ()
    uses_backbone = True

    def check(self, cfg) -> None:
        super().check(cfg)
        if not cfg.backbone:
            raise ValueError(f"train: --task {self.name} needs --backbone NAME (the network under the "
                             f"{cfg.model} head, e.g. resnet18_cbam)")
        wrong = [f for f in ("min_size", "max_size") if f not in self.size_fields and getattr(cfg, f) is not None]
        wrong += ["label_smoothing"] * bool(cfg.label_smoothing)
        wrong += ["input_size"] * (cfg.input_size is not None)
        if wrong:
            raise ValueError(f"train: {', '.join(wrong)} do(es) not apply to --task {self.name}")

    def record_fields(self, cfg, train_set) -> dict:
        return dict(task=self.name, backbone=cfg.backbone, model_kwargs=self.model_kwargs(cfg, train_set))

    def summary_fields(self, cfg) -> dict:
        return dict(task=self.name, backbone=cfg.backbone)

    def model_pretrained_cfg(self, cfg) -> dict:
        kwargs = dict(cfg.model_kwargs.get("backbone_kwargs") or {})
        with torch.device("meta"):
            return dict(getattr(create_model(cfg.backbone, **kwargs), "pretrained_cfg", {}) or {})

    def datasets(self, cfg, pretrained_cfg: dict | None = None):
        kw = dict(seed=cfg.seed)
        if parse_spec(cfg.data)[0] == "segfolder":
            kw["num_classes"] = cfg.num_classes
        return create_dataset(cfg.data, "train", **kw), create_dataset(cfg.data, "val", **kw)

    def model_kwargs(self, cfg, train_set) -> dict:
        """The keyword arguments of the head's builder: ``model_kwargs`` and the config's own size fields."""
        kwargs = dict(cfg.model_kwargs)
        if cfg.trainable_stages is not None:
            kwargs["trainable_stages"] = cfg.trainable_stages
        return kwargs

    def num_classes(self, cfg, train_set) -> int:
        if cfg.num_classes is not None and cfg.num_classes != train_set.num_classes:
            raise ValueError(f"train: num_classes is {cfg.num_classes} but {cfg.data!r} has {train_set.num_classes} "
                             f"classes{' (the background included)' if self.name == 'detection' else ''}; leave "
                             f"--num-classes out (it follows the data, but for segfolder)")
        return train_set.num_classes

    def build_model(self, cfg, train_set) -> nn.Module:
        torch.manual_seed(cfg.seed)
        return self.model_from_parts(cfg.model, cfg.backbone, self.num_classes(cfg, train_set),
                                     self.model_kwargs(cfg, train_set), cfg.attach, cfg.attach_init)

    def model_from_parts(self, arch: str, backbone: str, num_classes: int, kwargs: dict, attach: str | None,
                         attach_init: str = "identity") -> nn.Module:
        net: str | nn.Module = backbone  # the name, or the backbone built here to attach attention to
        if attach:
            kwargs = dict(kwargs)
            if kwargs.get("pretrained_backbone") is not None:
                raise ValueError(f"{self.name}: attach builds the backbone before the head; load its weights "
                                 f"with a checkpoint of the attached model instead of pretrained_backbone")
            net = create_model(backbone, num_classes=0, **(kwargs.pop("backbone_kwargs", None) or {}))
            attach_attention(net, attach, init=attach_init)
        return self.create(dict(arch=arch, backbone=net, num_classes=num_classes, **kwargs))

    def create(self, spec: Mapping) -> nn.Module:
        """The model of ``spec``: ``arch``, ``backbone`` (a name or a module), ``num_classes`` and keyword
        arguments of the head's builder."""
        raise NotImplementedError(f"{type(self).__name__}.create")

    def train_step(self, model: nn.Module, batch) -> torch.Tensor:
        """The loss of a batch made by ``collate_fn``."""
        raise NotImplementedError(f"{type(self).__name__}.train_step")

    def _predict(self, model, loader, device, d: Dist) -> tuple[dict, int, float]:
        """The metrics of ``loader``'s batches (every rank's, reduced), the images this rank predicted and the
        seconds it took."""
        raise NotImplementedError(f"{type(self).__name__}._predict")

    def model_from_record(self, record: dict, who: str) -> nn.Module:
        return self.model_from_parts(record["model"], record["backbone"], record["num_classes"],
                                     record.get("model_kwargs") or {}, record.get("attach"),
                                     record.get("attach_init") or "identity")

    def forward(self, net, batch, cfg, device) -> tuple[torch.Tensor, torch.Tensor]:
        loss = self.train_step(net, batch)
        return loss, torch.tensor([loss.item() * len(batch[0]), len(batch[0])], dtype=torch.float64)

    def train_metrics(self, sums: torch.Tensor) -> dict:
        return dict(train_loss=(sums[0] / sums[1]).item())

    def postfix(self, sums: torch.Tensor) -> dict:
        return dict(loss=f"{sums[0] / sums[1]:.4f}")

    def _loader(self, val_set, batch_size: int, workers: int, d: Dist):
        return DataLoader(val_set, batch_size=batch_size, sampler=Shard(len(val_set), d), num_workers=workers,
                          collate_fn=self.collate_fn, generator=torch.Generator())

    def evaluate(self, model, val_set, *, batch_size, device, workers=0, amp_dtype=None, d=None):
        """The validation row's values (``val_*``) and everything measured (per-class IoU, ``images_per_s``)."""
        d = d or Dist()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                metrics, images, seconds = self._predict(model, self._loader(val_set, batch_size, workers, d),
                                                         device, d)
        finally:
            model.train(was_training)
        timing = all_sum(torch.tensor([seconds, images], dtype=torch.float64, device=d.device), d).cpu()
        values = {f"val_{k}": v for k, v in metrics.items()}
        result = dict(values, images_per_s=timing[1].item() / max(timing[0].item() / d.world_size, 1e-9))
        return {k: values[k] for k in self.val_columns}, result

    @staticmethod
    def _timed(model, images, device):
        start = time.perf_counter()
        out = model(images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out, time.perf_counter() - start

    def evaluate_loader(self, model: nn.Module, loader: Iterable) -> dict:
        """The metrics of ``model`` (in eval mode, one process) over the batches of ``loader``
        (made by ``collate_fn``): COCO AP for detection; mIoU, pixel accuracy, per-class IoU for segmentation."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return self._predict(model, loader, _device(model), Dist())[0]
        finally:
            model.train(was_training)

    def describe(self, values: dict) -> str:
        return "  ".join(f"{k} {v:.4f}" for k, v in values.items())

    def summary_metrics(self, values: dict | None) -> dict:
        keys = [*self.val_columns, *self.summary_extra]
        return {k: (values or {}).get(k) for k in keys}

    summary_extra: tuple[str, ...] = ()


class DetectionTask(DenseTask):
    """Detection with torchvision's detectors: the loss is the sum of the model's loss dict; COCO AP."""

    name = "detection"
    collate_fn = staticmethod(detection_collate)
    size_fields = ("min_size", "max_size")
    best = "val_map"
    compare_metrics = ("val_map", "val_map_50", "val_map_75", "best_val_map")
    compare_label = "mAP"
    # a comparison of backbones without other arguments: the head, data and schedule of the README's example
    compare_defaults = dict(model="fasterrcnn", data="cluttered-digits-det", epochs=4, seeds=3,
                            recipe=dict(batch_size=8, lr=3e-3, opt="adamw", model_kwargs=dict(fpn_channels=64)))
    _BOX = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large")
    val_columns = tuple(f"val_{k}" for k in _BOX)

    def check(self, cfg) -> None:
        super().check(cfg)
        if cfg.model == "maskrcnn":  # mask AP beside box AP
            self.val_columns = self.val_columns + tuple(f"val_mask_{k}" for k in self._BOX)

    def model_kwargs(self, cfg, train_set) -> dict:
        kwargs = super().model_kwargs(cfg, train_set)
        own = getattr(train_set, "image_size", None)  # the built-in canvases: kept at their size
        for f in ("min_size", "max_size"):
            value = getattr(cfg, f)
            if value is None and own is not None:
                value = own
            if value is not None:
                kwargs[f] = value
        return kwargs

    def create(self, spec: Mapping) -> nn.Module:
        arch, backbone, num_classes, rest = _build_args(self.name, spec)
        return create_detector(arch, backbone, num_classes, **rest)

    def losses(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        images, targets = batch
        device = _device(model)
        images = [img.to(device) for img in images]
        targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
        return model(images, targets)

    def train_step(self, model: nn.Module, batch) -> torch.Tensor:
        # torchvision's loss dicts are never empty: never sum()'s start 0
        return cast(torch.Tensor, sum(self.losses(model, batch).values()))

    @staticmethod
    def _masks(model) -> bool:
        return getattr(getattr(model, "module", model), "arch", None) == "maskrcnn"

    def _predict(self, model, loader, device, d):
        preds, targets, seconds = [], [], 0.0
        for images, batch_targets in loader:
            out, dt = self._timed(model, [img.to(device) for img in images], device)
            seconds += dt
            preds += [{k: v.detach().float().cpu() if v.is_floating_point() else v.cpu() for k, v in p.items()}
                      for p in out]
            targets += batch_targets
        # every rank scores the whole set, in dataset order (shards are rank, rank + world, ...)
        shards = all_gather_objects((preds, targets), d)
        order = [(i, r) for r, (p, _) in enumerate(shards) for i in range(len(p))]
        metrics = DetectionMetrics(masks=self._masks(model))
        if order:
            by_index = sorted(order, key=lambda ir: ir[0] * d.world_size + ir[1])
            metrics.update([shards[r][0][i] for i, r in by_index], [shards[r][1][i] for i, r in by_index])
        return metrics.compute(), len(preds), seconds



class SegmentationTask(DenseTask):
    """Semantic segmentation: pixel-wise cross-entropy ignoring ``ignore_index``; mIoU and pixel accuracy."""

    name = "segmentation"
    best = "val_miou"
    compare_metrics = ("val_miou", "val_pixel_acc", "best_val_miou")
    compare_label = "mIoU"
    compare_defaults = dict(model="semantic_fpn", data="cluttered-digits-seg", epochs=4, seeds=3,
                            recipe=dict(batch_size=8, lr=3e-3, opt="adamw",
                                        model_kwargs=dict(fpn_channels=64, channels=64)))
    val_columns = ("val_miou", "val_pixel_acc")
    summary_extra = ("val_per_class_iou",)

    def __init__(self, ignore_index: int = IGNORE_INDEX):
        self.ignore_index = ignore_index
        self.collate_fn = partial(segmentation_collate, ignore_index=ignore_index)

    def create(self, spec: Mapping) -> nn.Module:
        arch, backbone, num_classes, rest = _build_args(self.name, spec)
        return create_segmenter(arch, backbone, num_classes, **rest)

    def train_step(self, model: nn.Module, batch) -> torch.Tensor:
        images, masks = batch
        device = _device(model)
        return F.cross_entropy(model(images.to(device)).float(), masks.to(device), ignore_index=self.ignore_index)

    def _predict(self, model, loader, device, d):
        metrics = SegmentationMetrics(getattr(model, "module", model).num_classes, self.ignore_index)
        images, seconds = 0, 0.0
        for x, masks in loader:
            logits, dt = self._timed(model, x.to(device), device)
            seconds += dt
            images += len(x)
            metrics.update(logits, masks.to(device))
        metrics.confusion = all_sum(metrics.confusion.to(d.device), d).cpu()
        return metrics.compute(), images, seconds
