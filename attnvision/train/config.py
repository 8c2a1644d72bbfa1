"""The configuration of a training run: :class:`TrainConfig`, one schema for Python, the command line
and config files.

Each field carries its help text (and choices, metavar) in its metadata, so ``attnvision train`` and
``attnvision compare`` build their options from the fields themselves: a new field is a new flag, with
no hand copy to drift. :func:`config_from_dict` checks a mapping against the fields (unknown keys with
a close-name suggestion, wrong types) and :func:`load_config` reads a YAML or JSON file, or the stored
recipe of a run (``RUN_DIR/run.json``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import yaml

from .._suggest import did_you_mean
from .loggers import logger_names

# Settings that change how a run is executed, not what it trains: free to differ when resuming.
RUNTIME_KEYS = ("workers", "threads", "eval_batch_size", "device", "out", "resume", "overwrite", "progress", "logger",
                "save_every_steps", "skip_nonfinite")


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None,
        choices: tuple | Callable[[], list] | None = None, metavar: str | tuple | None = None,
        cli: bool = True) -> Any:
    """A :class:`TrainConfig` field with its command-line help (``choices`` may be a callable, read when
    the parser is built: the registered tasks); ``cli=False`` keeps it off the command line."""
    metadata = dict(help=help, choices=choices, metavar=metavar, cli=cli)
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """One training run. ``lr=None`` and ``weight_decay=None`` pick the optimiser's default
    (SGD: 0.1 and 5e-4; AdamW: 1e-3 and 0.05)."""

    model: str = option("resnet20", "registered model name (see `attnvision models`), or the detection/segmentation "
                     "head with --task")
    data: str = option("digits", "digits | cluttered-digits | imagefolder:PATH | cifar10:PATH | cifar100:PATH | "
                    "synthetic[:CxHxW]; detection: cluttered-digits-det | coco:PATH | voc:PATH; segmentation: "
                    "cluttered-digits-seg | segfolder:PATH")
    task: str = option("classification", "what to train; detection and segmentation put the head --model (fasterrcnn, "
                    "maskrcnn, retinanet, fcos; semantic_fpn, upernet) on --backbone")
    backbone: str | None = option(None, "with --task detection|segmentation: the backbone (a registered name, "
                               "timm:NAME or torchvision:NAME)")
    skip_bad_files: bool = option(False, "train without the files that cannot be used (unreadable images, masks with "
                               "classes out of range), listed in OUT/bad_files.txt; without it, they stop the run "
                               "before it starts")
    num_classes: int | None = option(None, "segfolder: classes of its masks (elsewhere they follow the data)")
    min_size: int | None = option(None, "detection: resize the shorter side to this (default: 64 for the built-in "
                               "canvases, else 800)")
    max_size: int | None = option(None, "detection: longest side at most this (default: 64 for the built-in canvases, "
                               "else 1333)")
    trainable_stages: int | None = option(None, "detection/segmentation: backbone stages trained, from the last "
                                       "(default: all)")
    epochs: int = option(10, "number of epochs (with --resume DIR: may grow)")
    batch_size: int = option(128, "global batch, split over processes")
    lr: float | None = option(None, "peak learning rate (default: 0.1 for sgd, 1e-3 for adamw)")
    opt: str = option("sgd", "optimiser", choices=("sgd", "adamw"))
    momentum: float = option(0.9, "SGD momentum")
    nesterov: bool = option(False, "Nesterov momentum (SGD)")
    weight_decay: float | None = option(None, "on conv/linear weights, not on what the model's no_weight_decay() "
                                     "names (default: 5e-4 sgd, 0.05 adamw)")
    sched: str = option("cosine", "learning-rate schedule", choices=("cosine", "step", "constant"))
    warmup_epochs: float = option(0.0, "linear warm-up")
    step_epochs: float = option(30.0, "step schedule: multiply the rate by --step-gamma every N epochs")
    step_gamma: float = option(0.1, "step schedule: decay factor")
    step_milestones: tuple[float, ...] = option((), "step schedule at these epochs instead of every --step-epochs "
                                             "(He et al.: 50%% and 75%% of the epochs)", metavar="EPOCH")
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy")
    # classification augmentation (attnvision.data.augment): per sample, then per batch
    auto_augment: str | None = option(None, "classification: RandAugment, TrivialAugment Wide or AugMix on each "
                                   "training image", choices=("ra", "ta_wide", "augmix"))
    aa_magnitude: int | None = option(None, "ra: magnitude 0..30 (default 9); augmix: severity 1..10 (default 3)",
                                   metavar="M")
    aa_num_ops: int | None = option(None, "ra: operations per image (default 2)", metavar="N")
    color_jitter: float = option(0.0, "classification: brightness, contrast and saturation factors in [1-S, 1+S]",
                              metavar="S")
    random_erase: float = option(0.0, "classification: erase one rectangle of each training image with probability P",
                              metavar="P")
    mixup_alpha: float = option(0.0, "classification: MixUp with Beta(A, A); 0: off", metavar="A")
    cutmix_alpha: float = option(0.0, "classification: CutMix with Beta(A, A); with --mixup-alpha, one of the two per "
                              "batch", metavar="A")
    skip_nonfinite: int = option(0, "skip up to N optimiser steps whose loss is NaN or infinite (each with a warning; "
                              "counted in summary.json), then stop at the next as without it", metavar="N")
    clip_grad: float | None = option(None, "clip the gradients' global norm to this value")
    accum_steps: int = option(1, "gradient accumulation: one optimiser step every N batches of --batch-size (the step "
                           "of one batch N times larger)", metavar="N")
    layer_decay: float | None = option(None, "layer-wise lr decay: the model's group_matcher() groups, stem to head, "
                                    "train at lr·D^(L−i) (the head at lr; e.g. 0.75 to fine-tune)", metavar="D")
    amp: str | None = option(None, "mixed precision (fp16 on GPUs only)", choices=("bf16", "fp16"))
    ema: float | None = option(None, "keep an EMA of the weights with this decay (evaluated and saved)",
                            metavar="DECAY")
    compile: bool = option(False, "torch.compile the model")
    deterministic: bool = option(False, "deterministic kernels: resumed runs match exactly")
    sync_bn: bool = option(False, "under torchrun, normalise over the global batch (SyncBatchNorm on GPUs, its CPU "
                        "equivalent otherwise): the weights then equal one process's")
    seed: int = option(0, "seed of the initialisation, the data order and the augmentation")
    model_kwargs: dict = option(help="JSON dict passed to create_model (num_classes and in_chans follow the data); "
                             "with --task, to create_detector/create_segmenter", factory=dict)
    attach: str | None = option(None, "retrofit attention KIND into the model (attnvision.attach)", metavar="KIND")
    attach_init: str = option("identity", "initialisation of attached attention", choices=("identity", "default"))
    input_size: tuple[int, int, int] | None = option(None, "crop size for image files (default: the model's "
                                                  "pretrained_cfg)", metavar=("C", "H", "W"))
    workers: int = option(0, "data-loading processes")
    threads: int | None = option(None, "torch threads per process (default: the cores available, divided among "
                              "torchrun's processes)")
    eval_batch_size: int = option(256, "batch size of evaluation")
    device: str | None = option(None, "cpu | cuda (default: cuda when available)")
    out: str | None = option(None, "run directory (the command line's default: runs/train); train refuses one "
                             "holding another run")
    resume: bool = option(False, "continue the run in out from its last.state.pt", cli=False)
    save_every_steps: int | None = option(None, "also save the resumable state (last.state.pt, last.safetensors) "
                                       "every K optimiser steps, so that a crash loses at most K steps (epochs "
                                       "always end with a save)", metavar="K")
    overwrite: bool = option(False, "replace the run already in --out")
    progress: bool = option(True, "progress bars (each epoch's line is printed either way)")
    logger: str = option("csv", "where the metrics go, comma-separated: csv (metrics.csv and metrics.jsonl), "
                         "tensorboard (pip install \"attnvision[tb]\"), wandb (pip install \"attnvision[wandb]\"; "
                         "WANDB_MODE=offline works)", metavar="NAMES")

    def recipe(self) -> dict:
        """What the run trains: every setting but the :data:`RUNTIME_KEYS`."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in RUNTIME_KEYS}

    def to_dict(self) -> dict:
        """Every field as plain JSON/YAML values (tuples as lists), loadable by :func:`config_from_dict`."""
        return {k: plain(v) for k, v in dataclasses.asdict(self).items()}


def plain(value):
    """``value`` as JSON (a run record) stores it: tuples as lists, at any depth; two settings are the same
    when their plain forms are equal."""
    return json.loads(json.dumps(value))


def field_types() -> dict[str, Any]:
    """``{field name: its resolved annotation}`` of :class:`TrainConfig`."""
    return typing.get_type_hints(TrainConfig)


def unwrap_optional(annotation) -> tuple[Any, bool]:
    """``(T, True)`` for ``T | None``, ``(annotation, False)`` otherwise."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


_SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _coerce(key: str, value, annotation, who: str):
    """``value`` as the field's type, or a ``TypeError`` naming the key, the type and what came."""
    inner, optional = unwrap_optional(annotation)
    if value is None:
        if optional:
            return None
        raise TypeError(f"{who}: {key} must be {_type_name(inner)}, got null")
    origin = typing.get_origin(inner)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{who}: {key} must be a list of {_type_name(inner)}, got {value!r}")
        args = typing.get_args(inner)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(key, v, args[0], who) for v in value)
        if len(value) != len(args):
            raise TypeError(f"{who}: {key} must hold {len(args)} values, got {len(value)}: {value!r}")
        return tuple(_coerce(key, v, a, who) for v, a in zip(value, args))
    if inner is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{who}: {key} must be a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if inner in _SCALARS:
        # bool is an int to Python but not to a config; an integer is a fine float
        fits = (isinstance(value, inner) if inner in (bool, str) else
                not isinstance(value, bool) and isinstance(value, (int, float) if inner is float else int))
        if not fits:
            raise TypeError(f"{who}: {key} must be {_SCALARS[inner]}, got {value!r}")
        return float(value) if inner is float else value
    return value


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", str(annotation))


def config_from_dict(values: dict, who: str = "train") -> dict:
    """``values`` checked against :class:`TrainConfig`'s fields and converted to their types (lists to
    tuples); unknown keys and wrong types are one-line errors. Returns the checked mapping."""
    if not isinstance(values, dict):
        raise TypeError(f"{who}: a config must be a mapping of TrainConfig fields, got {type(values).__name__}")
    types_ = field_types()
    unknown = [k for k in values if k not in types_]
    if unknown:
        key = unknown[0]
        raise ValueError(f"{who}: unknown config key {key!r}{did_you_mean(str(key), list(types_))} "
                         f"(the keys are TrainConfig's fields: `attnvision train --help`)")
    checked = {k: _coerce(k, v, types_[k], who) for k, v in values.items()}
    for key, value in checked.items():
        choices = TrainConfig.__dataclass_fields__[key].metadata.get("choices")
        if isinstance(choices, tuple) and value is not None and value not in choices:
            raise ValueError(f"{who}: {key} must be one of {choices}, got {value!r}")
    if "logger" in checked:
        logger_names(checked["logger"], who)
    return checked


def load_config(path: str, who: str = "train") -> dict:
    """The settings of a config file: YAML (``.yaml``/``.yml``) or JSON (``.json``), a mapping of
    :class:`TrainConfig` fields; a run's ``run.json`` gives the recipe it trained with (its ``config``,
    without where and how it ran: ``out``, ``resume``, ``overwrite``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{who}: no config file at {path!r}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        if path.endswith((".yaml", ".yml")):
            values = yaml.safe_load(text)
        elif path.endswith(".json"):
            values = json.loads(text)
        else:
            raise ValueError(f"{who}: a config file is .yaml, .yml or .json, got {path!r}")
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise ValueError(f"{who}: {path!r} is not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'}: "
                         f"{' '.join(str(e).split())}") from None
    if values is None:
        values = {}
    if isinstance(values, dict) and {"model", "num_classes", "pretrained_cfg", "config"} <= set(values):
        values = {k: v for k, v in values["config"].items() if k not in ("out", "resume", "overwrite")}
    return config_from_dict(values, f"{who} (config {path})")


def dump_config(values: dict) -> str:
    """A config as YAML that :func:`load_config` reads back to the same values."""
    return yaml.safe_dump({k: plain(v) for k, v in values.items()}, sort_keys=False, allow_unicode=True)
