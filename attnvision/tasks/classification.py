"""Image classification as a task of the training loop: cross-entropy with label smoothing (on soft targets
under MixUp/CutMix), top-1/top-5."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data import create_dataset
from ..data.augment import SampleAugment, mixup_cutmix
from ..factory import create_model
from ..train import rundir
from ..train.evaluate import evaluate
from ..train.tasks import Task, register_task


@register_task
class ClassificationTask(Task):
    """Image classification: cross-entropy (with ``label_smoothing``) on ``create_model(cfg.model)``."""

    name = "classification"
    train_columns = ("train_loss", "train_acc1")
    val_columns = ("val_loss", "val_acc1", "val_acc5")
    best = "val_acc1"
    compare_metrics = ("val_acc1", "val_acc5", "best_val_acc1")
    compare_label = "val acc1 %"
    compare_digits = 2
    augmentations = True

    def check(self, cfg) -> None:
        super().check(cfg)
        given = [f for f in ("backbone", "num_classes", "min_size", "max_size", "trainable_stages")
                 if getattr(cfg, f) is not None]
        if given:
            raise ValueError(f"train: {', '.join(given)} {'is' if len(given) == 1 else 'are'} for detection and "
                             f"segmentation (--task); a classifier takes its classes from the data")

    def model_pretrained_cfg(self, cfg) -> dict:
        with torch.device("meta"):
            return dict(getattr(create_model(cfg.model, **cfg.model_kwargs), "pretrained_cfg", {}) or {})

    def datasets(self, cfg, pretrained_cfg: dict | None = None):
        pc = pretrained_cfg or {}
        kw = dict(input_size=cfg.input_size or pc.get("input_size"), mean=pc.get("mean"), std=pc.get("std"),
                  crop_pct=pc.get("crop_pct", 0.875), seed=cfg.seed)
        return (create_dataset(cfg.data, "train", sample_augment=self.sample_augment(cfg), **kw),
                create_dataset(cfg.data, "val", **kw))

    def sample_augment(self, cfg) -> SampleAugment | None:
        aug = SampleAugment(auto_augment=cfg.auto_augment, aa_magnitude=cfg.aa_magnitude, aa_num_ops=cfg.aa_num_ops,
                            color_jitter=cfg.color_jitter, random_erase=cfg.random_erase)
        return aug or None

    def batch_transform(self, cfg, train_set):
        """MixUp/CutMix (:func:`attnvision.data.augment.mixup_cutmix`) over ``train_set``'s classes, or ``None``."""
        if not (cfg.mixup_alpha or cfg.cutmix_alpha):
            return None
        num_classes = getattr(train_set, "num_classes", None)
        if not isinstance(num_classes, int):
            raise ValueError(f"train: mixup_alpha/cutmix_alpha need the number of classes, but the training set "
                             f"({type(train_set).__name__}) has no integer num_classes (got {num_classes!r})")
        return mixup_cutmix(num_classes, cfg.mixup_alpha, cfg.cutmix_alpha)

    def build_model(self, cfg, train_set) -> nn.Module:
        return self.model(cfg, train_set.num_classes, train_set.in_chans)

    def model(self, cfg, num_classes: int, in_chans: int) -> nn.Module:
        torch.manual_seed(cfg.seed)
        return rundir.create_run_model(cfg.model, cfg.model_kwargs, num_classes=num_classes, in_chans=in_chans,
                                       attach=cfg.attach, attach_init=cfg.attach_init)

    def forward(self, net, batch, cfg, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy against class indices (B,) or, after MixUp/CutMix, class probabilities (B, K) (label
        smoothing mixes either with the uniform distribution); train accuracy counts the larger share of a mixed
        label as its class."""
        x, y = batch
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = net(x)
        # the loss in float32 at least (bf16/fp16 logits under AMP; float64 models keep theirs)
        loss = F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), y,
                               label_smoothing=cfg.label_smoothing)
        hard = y.argmax(1) if y.is_floating_point() else y
        sums = torch.tensor([loss.item() * len(y), (logits.argmax(1) == hard).sum().item(), len(y)],
                            dtype=torch.float64)
        return loss, sums

    def train_metrics(self, sums: torch.Tensor) -> dict:
        return dict(train_loss=(sums[0] / sums[2]).item(), train_acc1=(100 * sums[1] / sums[2]).item())

    def postfix(self, sums: torch.Tensor) -> dict:
        return dict(loss=f"{sums[0] / sums[2]:.4f}", acc=f"{100 * sums[1] / sums[2]:.2f}")

    def evaluate(self, model, val_set, *, batch_size, device, workers=0, amp_dtype=None, d=None):
        """The validation row's values, and the :class:`EvalResult` (``images_per_s`` among its fields)."""
        result = evaluate(model, val_set, batch_size=batch_size, device=device, workers=workers, amp_dtype=amp_dtype,
                          d=d)
        return dict(val_loss=result.loss, val_acc1=result.acc1, val_acc5=result.acc5), result

    def describe(self, values: dict) -> str:
        return f"val loss {values['val_loss']:.4f}  val acc1 {values['val_acc1']:.2f}  acc5 {values['val_acc5']:.2f}"

    def summary_metrics(self, values: dict | None) -> dict:
        return {k: values[k] if values else None for k in ("val_acc1", "val_acc5", "val_loss")}

    def model_from_record(self, record: dict, who: str) -> nn.Module:
        return rundir.create_run_model(record["model"], record.get("model_kwargs") or {},
                                       num_classes=record["num_classes"], in_chans=record["in_chans"],
                                       attach=record.get("attach"), attach_init=record.get("attach_init") or "identity",
                                       who=who)
