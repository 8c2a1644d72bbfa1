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

from ..data import data_task, spec_names
from ..data.augment import AUGMENT_FIELDS, SampleAugment
from ..registry import Registry

TASKS: Registry[type] = Registry("task")


class Task:
    """The parts of a run that depend on the task (see the module docstring); subclasses fill them in."""

    name: str
    collate_fn = None
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
