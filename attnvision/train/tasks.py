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
- ``summary_metrics(result)``: what ``summary.json`` reports of the last evaluation;
- ``compare_metrics``, ``compare_label``, ``compare_digits``, ``uses_backbone``, ``compare_defaults``:
  what :func:`attnvision.compare.compare` reports and how it builds a grid of this task.

Tasks are plug-ins: a subclass registers itself with :func:`register_task` (``TASKS``), and the
trainer and ``compare`` only ever look a task up by name. The built-in ones live in
:mod:`attnvision.tasks`: classification, detection and segmentation.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..data import data_task, spec_names
from ..data.augment import AUGMENT_FIELDS, SampleAugment
from ..registry import Registry
from .config import TrainConfig
from .distributed import Dist

TASKS: Registry[type[Task]] = Registry("task")


class Task:
    """The parts of a run that depend on the task (see the module docstring); subclasses fill them in."""

    name: str
    collate_fn: Callable | None = None
    train_columns: tuple[str, ...]
    val_columns: tuple[str, ...]
    best: str
    # what ``compare`` reports of a run: its metric columns (``best`` is ranked and paired), how they print
    compare_metrics: tuple[str, ...]
    compare_label: str
    compare_digits: int = 4
    # the model is a head (``cfg.model``) on a backbone (``cfg.backbone``), and ``compare``'s models are
    # backbones under one head; ``compare_defaults``: that head, the data and the schedule
    uses_backbone: bool = False
    compare_defaults: dict | None = None
    augmentations = False  # whether the task applies TrainConfig's auto_augment ... cutmix_alpha

    def check(self, cfg) -> None:
        kind = data_task(cfg.data)
        if kind != self.name:
            raise ValueError(f"train: --task {self.name} needs {self.name} data ({', '.join(_data_of(self.name))}), "
                             f"got {cfg.data!r}, which is {kind} data; give --task {kind} or other --data")
        given = [f for f in AUGMENT_FIELDS if getattr(cfg, f) not in (None, 0)]
        if given and not self.augmentations:
            raise ValueError(f"train: {', '.join(given)} {'is an' if len(given) == 1 else 'are'} image-classification "
                             f"augmentation{'s' * (len(given) > 1)}; --task {self.name} does not take "
                             f"{'it' if len(given) == 1 else 'them'}")

    def model_pretrained_cfg(self, cfg: TrainConfig) -> dict:
        """The preprocessing of the model ``cfg`` names (its ``pretrained_cfg``), built without weights."""
        raise NotImplementedError(f"{type(self).__name__}.model_pretrained_cfg")

    def datasets(self, cfg: TrainConfig, pretrained_cfg: dict | None = None) -> tuple[Any, Any]:
        """The train and val datasets of ``cfg.data`` (with ``pretrained_cfg``'s preprocessing)."""
        raise NotImplementedError(f"{type(self).__name__}.datasets")

    def build_model(self, cfg: TrainConfig, train_set) -> nn.Module:
        """The model of ``cfg`` for ``train_set`` (its classes), seeded by ``cfg.seed``."""
        raise NotImplementedError(f"{type(self).__name__}.build_model")

    def model_from_record(self, record: dict, who: str) -> nn.Module:
        """The model of a run's record (``run.json``), with random weights."""
        raise NotImplementedError(f"{type(self).__name__}.model_from_record")

    def forward(self, net: nn.Module, batch, cfg: TrainConfig,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss of ``batch`` and the float64 sums of the epoch's ``train_*`` values (the count of images last)."""
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def train_metrics(self, sums: torch.Tensor) -> dict:
        """The ``train_*`` values of an epoch from its summed ``sums``."""
        raise NotImplementedError(f"{type(self).__name__}.train_metrics")

    def postfix(self, sums: torch.Tensor) -> dict:
        """What the progress bar shows of the sums so far."""
        raise NotImplementedError(f"{type(self).__name__}.postfix")

    def evaluate(self, model: nn.Module, val_set, *, batch_size: int, device: torch.device, workers: int = 0,
                 amp_dtype: torch.dtype | None = None, d: Dist | None = None) -> tuple[dict, Any]:
        """The ``val_*`` values of ``model`` on ``val_set``, and the task's result of the evaluation (with its
        ``images_per_s``: an attribute, or a key of a dict)."""
        raise NotImplementedError(f"{type(self).__name__}.evaluate")

    def describe(self, values: dict) -> str:
        """The ``val_*`` values in the line said after each epoch."""
        raise NotImplementedError(f"{type(self).__name__}.describe")

    def summary_metrics(self, values: dict | None) -> dict:
        """What ``summary.json`` reports of the last evaluation (``None``: there was none)."""
        raise NotImplementedError(f"{type(self).__name__}.summary_metrics")

    def record_fields(self, cfg, train_set) -> dict:
        """What the run record (``run.json``, the weights' metadata) adds to rebuild this task's model."""
        return {}

    def summary_fields(self, cfg) -> dict:
        """What ``summary.json`` adds for this task."""
        return {}

    def sample_augment(self, cfg) -> SampleAugment | None:
        """The per-sample augmentations the task's training set adds (``None``: none)."""
        return None

    def batch_transform(self, cfg, train_set):
        """A callable ``(batch, *, seed) -> batch`` applied to each training batch, or ``None``."""
        return None

    def columns(self) -> tuple[str, ...]:
        """The columns of ``metrics.csv``."""
        return ("epoch", *self.train_columns, *self.val_columns, "lr", "seconds", "train_images_per_s")

    def best_value(self, row: dict) -> float:
        """The value of ``best`` in ``row`` (NaN, as an undefined metric, never counts as better)."""
        value = row[self.best]
        return float("-inf") if value != value else value


def _data_of(task: str) -> list[str]:
    return spec_names(task)


def register_task(cls=None, *, name: str | None = None, override: bool = False):
    """Register a :class:`Task` subclass under ``name`` (default: its ``name`` attribute); a decorator too."""

    def add(task_cls):
        return TASKS.register(name or task_cls.name, task_cls, override=override, who="register_task")

    return add(cls) if cls is not None else add


def get_task(name: str) -> Task:
    """The task object for ``TrainConfig.task``."""
    return TASKS.get(name, "train (task)")()
