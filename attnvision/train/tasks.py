"""What the training loop asks of a task: its data, its model, its loss and its metrics.

:func:`attnvision.train.train` runs one loop for every task; ``TrainConfig.task`` names the task
object (:func:`get_task`) that supplies the parts that differ:

- ``check(cfg)``: settings that do not fit the task, refused before anything is built;
- ``model_pretrained_cfg(cfg)``, ``datasets(cfg, pretrained_cfg)``, ``build_model(cfg, train_set)``:
  the model's preprocessing, the train/val datasets, the model (seeded by ``cfg.seed``);
- ``collate_fn``: how a batch of dataset items is put together (``None``: PyTorch's default);
- ``forward(net, batch, cfg, device)``: the loss to back-propagate and the float64 sums the loop
  reduces over ranks (``TRAIN_SUMS``, the count of images last);
- ``train_metrics(sums)``, ``evaluate(model, val_set, ...)``: the ``train_*`` and ``val_*`` values of an
  epoch's row of ``metrics.csv`` (columns ``train_columns`` and ``val_columns``);
- ``best``: the ``val_*`` column whose highest value marks ``best.safetensors``;
- ``summary_metrics(result)``: what ``summary.json`` reports of the last evaluation.

:class:`ClassificationTask` is the image-classification recipe (cross-entropy with label smoothing,
top-1/top-5); :class:`attnvision.dense.DetectionTask` and :class:`attnvision.dense.SegmentationTask`
are its peers for torchvision's detectors and our segmenters.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import rundir

TASK_NAMES = ("classification", "detection", "segmentation")


class Task:
    """The parts of a run that depend on the task (see the module docstring); subclasses fill them in."""

    name: str
    collate_fn = None
    train_columns: tuple[str, ...]
    val_columns: tuple[str, ...]
    best: str

    def check(self, cfg) -> None:
        from ..data import data_task

        kind = data_task(cfg.data)
        if kind != self.name:
            raise ValueError(f"train: --task {self.name} needs {self.name} data ({', '.join(_data_of(self.name))}), "
                             f"got {cfg.data!r}, which is {kind} data; give --task {kind} or other --data")

    def columns(self) -> tuple[str, ...]:
        """The columns of ``metrics.csv``."""
        return ("epoch", *self.train_columns, *self.val_columns, "lr", "seconds", "train_images_per_s")

    def best_value(self, row: dict) -> float:
        """The value of ``best`` in ``row`` (NaN, as an undefined metric, never counts as better)."""
        value = row[self.best]
        return float("-inf") if value != value else value


def _data_of(task: str) -> list[str]:
    from ..data import BUILTIN, WITH_PATH, data_task

    return [n for n in BUILTIN if data_task(n) == task] + [f"{n}:PATH" for n in WITH_PATH
                                                           if data_task(f"{n}:x") == task]


class ClassificationTask(Task):
    """Image classification: cross-entropy (with ``label_smoothing``) on ``create_model(cfg.model)``."""

    name = "classification"
    train_columns = ("train_loss", "train_acc1")
    val_columns = ("val_loss", "val_acc1", "val_acc5")
    best = "val_acc1"

    def check(self, cfg) -> None:
        super().check(cfg)
        given = [f for f in ("backbone", "num_classes", "min_size", "max_size", "trainable_stages")
                 if getattr(cfg, f) is not None]
        if given:
            raise ValueError(f"train: {', '.join(given)} {'is' if len(given) == 1 else 'are'} for detection and "
                             f"segmentation (--task); a classifier takes its classes from the data")

    def model_pretrained_cfg(self, cfg) -> dict:
        from ..registry import create_model

        with torch.device("meta"):
            return dict(getattr(create_model(cfg.model, **cfg.model_kwargs), "pretrained_cfg", {}) or {})

    def datasets(self, cfg, pretrained_cfg: dict | None = None):
        from ..data import create_dataset

        pc = pretrained_cfg or {}
        kw = dict(input_size=cfg.input_size or pc.get("input_size"), mean=pc.get("mean"), std=pc.get("std"),
                  crop_pct=pc.get("crop_pct", 0.875), seed=cfg.seed)
        return create_dataset(cfg.data, "train", **kw), create_dataset(cfg.data, "val", **kw)

    def build_model(self, cfg, train_set) -> nn.Module:
        return self.model(cfg, train_set.num_classes, train_set.in_chans)

    def model(self, cfg, num_classes: int, in_chans: int) -> nn.Module:
        torch.manual_seed(cfg.seed)
        return rundir.create_run_model(cfg.model, cfg.model_kwargs, num_classes=num_classes, in_chans=in_chans,
                                       attach=cfg.attach, attach_init=cfg.attach_init)

    def forward(self, net, batch, cfg, device) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = net(x)
        # the loss in float32 at least (bf16/fp16 logits under AMP; float64 models keep theirs)
        loss = F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), y,
                               label_smoothing=cfg.label_smoothing)
        sums = torch.tensor([loss.item() * len(y), (logits.argmax(1) == y).sum().item(), len(y)],
                            dtype=torch.float64)
        return loss, sums

    def train_metrics(self, sums: torch.Tensor) -> dict:
        return dict(train_loss=(sums[0] / sums[2]).item(), train_acc1=(100 * sums[1] / sums[2]).item())

    def postfix(self, sums: torch.Tensor) -> dict:
        return dict(loss=f"{sums[0] / sums[2]:.4f}", acc=f"{100 * sums[1] / sums[2]:.2f}")

    def evaluate(self, model, val_set, *, batch_size, device, workers=0, amp_dtype=None, d=None):
        """The validation row's values, and the :class:`EvalResult` (``images_per_s`` among its fields)."""
        from .evaluate import evaluate

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


def get_task(name: str) -> Task:
    """The task object for ``TrainConfig.task``."""
    if name == "classification":
        return ClassificationTask()
    if name in ("detection", "segmentation"):
        from ..dense.tasks import TASKS
        return TASKS[name]()
    from .._suggest import unknown_name_error
    raise unknown_name_error("train (task)", name, TASK_NAMES)
