"""Planning a comparison: the grid of models × settings × seeds, and what each setting changes.

``parse_sets(["attn_kwargs.reduction=8,16"])`` reads the grid; :func:`plan` keeps, for each model, only
the settings that change it (:func:`applicable`) and pairs every group with the baseline trained under
the same grid point. ``DEFAULT`` is the README's first command, ``PRESETS`` the papers' protocols.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from typing import Any

import torch

from ..data import SMALL_DATA_RECIPE
from ..factory import create_model
from ..train.config import TrainConfig
from ..train.tasks import get_task

DEFAULT: dict[str, Any] = dict(
    models=["resnet20", "resnet20_se", "resnet20_eca", "resnet20_bam", "resnet20_cbam"],
    settings=[{"attn_kwargs.reduction": 4}],
    data="cluttered-digits", epochs=11, seeds=3,
    recipe=dict(SMALL_DATA_RECIPE, model_kwargs=dict(stem="imagenet")),
)

# He et al., Deep Residual Learning for Image Recognition (CVPR 2016), §4.2, CIFAR-10: SGD with momentum 0.9,
# weight decay 1e-4, batch 128, learning rate 0.1 divided by 10 at 32k and 48k of 64k iterations (50% and 75%),
# i.e. epochs 82 and 123 of 164 on the 50k training images, with 4-pixel pad, 32×32 crop and flip. ResNet-110 is
# the deepest network of that table and one the SE paper reports on CIFAR; attention keeps the papers' reduction 16.
# recipes/cifar_resnet110.yaml is the same recipe as a config file (tests/test_recipes.py keeps the two equal).
PRESETS: dict[str, dict[str, Any]] = dict(
    cifar=dict(
        models=["resnet110", "resnet110_se", "resnet110_eca", "resnet110_bam", "resnet110_cbam"],
        settings=[{}], data=None, epochs=164, seeds=3,
        recipe=dict(batch_size=128, lr=0.1, opt="sgd", momentum=0.9, weight_decay=1e-4, sched="step",
                    step_milestones=(82, 123)),
    ),
)



def parse_sets(sets: list[str] | None) -> list[dict]:
    """``["attn_kwargs.reduction=8,16", "train.lr=0.1"]`` → the grid of settings (a list of dicts).

    Keys are dotted paths into the model's keyword arguments, or ``train.FIELD`` for a field of
    :class:`TrainConfig`. Values are read as JSON where they parse (``8``, ``true``, ``[1,2]``),
    else as strings.
    """
    axes = []
    for item in sets or []:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"compare: --set takes KEY=V1,V2,..., got {item!r}")
        if key.startswith("train.") and key[6:] not in TrainConfig.__dataclass_fields__:
            raise ValueError(f"compare: {key!r} is not a training setting (fields: "
                             f"{', '.join(TrainConfig.__dataclass_fields__)})")
        axes.append([(key, _value(v)) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)]


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def settings_label(setting: dict) -> str:
    return ";".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in setting.items()) or "-"


def run_config(model: str, setting: dict, seed: int, base: TrainConfig) -> TrainConfig:
    """The run of ``model`` (the backbone, for detection and segmentation) under ``setting`` and ``seed``."""
    named: dict[str, Any] = dict(backbone=model) if get_task(base.task).uses_backbone else dict(model=model)
    cfg = dataclasses.replace(base, **named, seed=seed, model_kwargs=json.loads(json.dumps(base.model_kwargs)))
    for key, value in setting.items():
        if key.startswith("train."):
            setattr(cfg, key[6:], value)
            continue
        *path, last = key.split(".")
        target = cfg.model_kwargs
        for part in path:
            target = target.setdefault(part, {})
        target[last] = value
    return cfg


def run_dirname(model: str, setting: dict) -> str:
    label = settings_label(setting)
    safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in label.replace(";", "__"))
    return model if label == "-" else f"{model}__{safe}"


def _signature(model: str, model_kwargs: dict):
    """What a model built with ``model_kwargs`` is: its modules, tensor shapes and plain attributes
    (built on the meta device, so nothing is allocated)."""
    with torch.device("meta"):
        net = create_model(model, **model_kwargs)
    plain = (bool, int, float, str, tuple, type(None))
    attrs = [(name, sorted((k, repr(v)) for k, v in vars(m).items() if not k.startswith("_") and isinstance(v, plain)))
             for name, m in net.named_modules()]
    return repr(net), [(k, tuple(v.shape)) for k, v in net.state_dict().items()], attrs


def applicable(model: str, setting: dict, base: TrainConfig) -> dict:
    """The part of ``setting`` that changes ``model``: ``train.*`` keys always do; a model keyword does
    when the model built with it differs from the one built without it (a model that does not take
    the keyword, like ECA for ``attn_kwargs.reduction``, or that ignores it, like a network without
    attention for any ``attn_kwargs``, is not affected)."""
    kept, plain = {}, None
    for key, value in setting.items():
        if key.startswith("train.") or get_task(base.task).uses_backbone:  # a head's keywords change every run
            kept[key] = value
            continue
        if plain is None:  # the model without any setting: built once, compared with each
            plain = _signature(model, run_config(model, {}, 0, base).model_kwargs)
        try:
            changed = _signature(model, run_config(model, {key: value}, 0, base).model_kwargs) != plain
        except TypeError:  # an unexpected keyword: this model has no such setting
            changed = False
        if changed:
            kept[key] = value
    return kept


@dataclass
class _Plan:
    """The runs of a grid: every model with each setting restricted to what affects it, and for every
    (model, settings) group the baseline group it is paired with."""

    runs: list[tuple[str, dict, int]]                   # (model, applicable settings, seed), unique
    partner: dict[tuple[str, str], tuple[str, str]]     # group -> the baseline group of the same grid point
    unaffected: dict[str, list[str]]                    # setting key -> models it does not change


def plan(models: list[str], settings: list[dict], seeds: int, base: TrainConfig) -> _Plan:
    """Restrict each setting to the models it affects (:func:`applicable`), so that e.g. the baseline
    runs once per seed under ``--set attn_kwargs.reduction=4,16``; pair every group with the
    baseline (``models[0]``) trained under the same grid point's settings."""
    runs: list[tuple[str, dict, int]] = []
    partner: dict[tuple[str, str], tuple[str, str]] = {}
    unaffected: dict[str, list[str]] = {}
    seen: set[tuple[str, str, int]] = set()
    for s in settings:
        own = {m: applicable(m, s, base) for m in models}
        for key in s:
            missed = [m for m in models if key not in own[m]]
            if len(missed) == len(models):
                raise ValueError(f"compare: --set {key} changes none of the models ({', '.join(models)}); "
                                 f"check the key's spelling against the models' keyword arguments")
            if missed:
                unaffected.setdefault(key, [])
                unaffected[key] += [m for m in missed if m not in unaffected[key]]
        baseline = (models[0], settings_label(own[models[0]]))
        for m in models:
            group_key = (m, settings_label(own[m]))
            partner.setdefault(group_key, baseline)
            for k in range(seeds):
                if (m, group_key[1], k) not in seen:
                    seen.add((m, group_key[1], k))
                    runs.append((m, own[m], k))
    return _Plan(runs, partner, unaffected)


def _preset(name: str | None) -> dict:
    if name is None:
        return DEFAULT
    if name not in PRESETS:
        raise ValueError(f"compare: preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]
