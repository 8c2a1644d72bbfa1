"""Optimisers, learning-rate schedules and EMA for the trainer.

Weight decay (timm's and torchvision's recipes): every parameter with fewer than two dimensions
(biases, normalisation scales and shifts, layer scales) and every parameter the model names in
``no_weight_decay()`` (position embeddings, class tokens, relative position tables) is trained
without it; the rest (convolution and linear weights) with it. Models nested in others (a backbone
in a detector) are asked too, their names taken under their path.

Layer-wise learning-rate decay (ELECTRA, Clark et al. 2020; BEiT's fine-tuning recipe, Bao et al.
2022; timm's ``param_groups_layer_decay``): the model's ``group_matcher()`` numbers its parameter groups from the
stem (0) to the head (L); group ``i`` trains at ``lr · D^(L − i)``, so the head keeps the full rate
and each group before it one more factor ``D``.
"""
from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..models._base import MATCH_PREV

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")


def no_weight_decay_patterns(model: nn.Module) -> set[str]:
    """What ``model.no_weight_decay()`` and that of every module inside it name (full parameter
    names, module prefixes, or fnmatch patterns), each under the path of the module that named it."""
    patterns: set[str] = set()
    for path, module in model.named_modules():
        method = getattr(module, "no_weight_decay", None)
        if not callable(method):
            continue
        names = method()
        if isinstance(names, str) or not isinstance(names, Iterable) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"train: {type(module).__name__}.no_weight_decay() must return a set of parameter "
                            f"names, got {names!r}")
        patterns.update(f"{path}.{n}" if path else n for n in names)
    return patterns


def _matches(name: str, patterns: set[str]) -> bool:
    """``name`` is one of ``patterns``, lies under one (a module prefix), or matches one with wildcards."""
    if name in patterns:
        return True
    return any(name.startswith(p + ".") or (any(c in p for c in "*?[") and fnmatch.fnmatchcase(name, p))
               for p in patterns)


def layer_ids(model: nn.Module) -> dict[str, int]:
    """Parameter name → layer id from ``model.group_matcher(coarse=False)`` (timm's format: a dict of
    regexes, or of lists of ``(regex, suffix)``, whose captured numbers order the groups; a suffix ending
    in :data:`MATCH_PREV` joins the group before; parameters no regex matches form the last group).
    Ids run from 0 (the stem) to the head's, with no gaps."""
    matcher = getattr(model, "group_matcher", None)
    if not callable(matcher):
        raise ValueError(f"train: layer_decay needs a model with group_matcher() (timm's interface), and "
                         f"{type(model).__name__} has none; leave layer_decay out for it")
    ordinal = _ordinal_fn(matcher(coarse=False), type(model).__name__)
    names = [n for n, _ in model.named_parameters()]
    keys = {n: ordinal(n) for n in names}
    ids_of_key, current = {}, -1
    for key in sorted(set(keys.values())):
        if current < 0 or key[-1] != MATCH_PREV:
            current += 1
        ids_of_key[key] = current
    return {n: ids_of_key[keys[n]] for n in names}


def _ordinal_fn(spec, who: str) -> Callable[[str], tuple[float, ...]]:
    """A parameter name → its sort key (a tuple of numbers), for a ``group_matcher`` result."""
    if callable(spec):
        def from_callable(name):
            key = spec(name)
            return tuple(map(float, key)) if isinstance(key, Iterable) else (float(key),)
        return from_callable
    if not isinstance(spec, dict):
        raise TypeError(f"train: {who}.group_matcher() must return a dict of regexes or a callable, got {spec!r}")
    rules = []
    for position, entry in enumerate(spec.values()):
        if entry is None:
            continue
        for regex, suffix in (entry if isinstance(entry, (list, tuple)) else [(entry, None)]):
            rules.append((re.compile(regex), position, tuple(suffix or ())))

    def from_rules(name):
        for regex, position, suffix in rules:
            m = regex.match(name)
            if m:
                return (float(position), *(float(g) for g in m.groups() if g is not None), *map(float, suffix))
        return (math.inf,)  # the head (and anything else after the blocks)
    return from_rules


def param_groups(model: nn.Module, weight_decay: float, *, lr: float | None = None,
                 layer_decay: float | None = None) -> list[dict]:
    """The optimiser's parameter groups: without ``layer_decay``, ``[decayed, not decayed]``; with it, one
    pair per layer (stem first), each carrying ``lr_scale`` and ``lr = lr · lr_scale``. Frozen parameters
    are left out."""
    skip = no_weight_decay_patterns(model)

    def decays(name, p):
        return p.ndim > 1 and not _matches(name, skip)

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if layer_decay is None:
        return [dict(params=[p for n, p in trainable if decays(n, p)], weight_decay=weight_decay),
                dict(params=[p for n, p in trainable if not decays(n, p)], weight_decay=0.0)]
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"train: layer_decay must be in (0, 1], got {layer_decay!r}")
    if lr is None:
        raise ValueError("train: param_groups with layer_decay needs the base lr")
    ids = layer_ids(model)
    last = max(ids.values(), default=0)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in trainable:
        key = (ids[name], decays(name, p))
        if key not in groups:
            scale = layer_decay ** (last - ids[name])
            groups[key] = dict(params=[], weight_decay=weight_decay if key[1] else 0.0, lr=lr * scale,
                               lr_scale=scale, layer_id=ids[name])
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def base_lr(optimizer: torch.optim.Optimizer) -> float:
    """The current unscaled rate (that of the groups with ``lr_scale`` 1, the head's under layer decay)."""
    group = optimizer.param_groups[0]
    return group["lr"] / group.get("lr_scale", 1.0)


def create_optimizer(model: nn.Module, opt: str, lr: float, *, weight_decay: float, momentum: float = 0.9,
                     nesterov: bool = False, layer_decay: float | None = None) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay, lr=lr, layer_decay=layer_decay)
    if opt == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if opt == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"train: opt must be one of {OPTIMIZERS}, got {opt!r}")


def create_scheduler(optimizer: torch.optim.Optimizer, sched: str, *, total_steps: int, warmup_steps: int = 0,
                     step_every: int = 1, gamma: float = 0.1,
                     milestones: tuple[int, ...] = ()) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration schedule: linear warm-up from 0, then cosine to 0, steps of ``gamma`` every
    ``step_every`` iterations (or at each of the ``milestones`` iterations when given), or constant."""
    if sched not in SCHEDULES:
        raise ValueError(f"train: sched must be one of {SCHEDULES}, got {sched!r}")
    if list(milestones) != sorted(milestones) or any(m <= 0 for m in milestones):
        raise ValueError(f"train: step milestones must be positive and increasing, got {list(milestones)!r}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if sched == "cosine":
            t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        if sched == "step" and milestones:
            return gamma ** sum(step >= m for m in milestones)
        if sched == "step":
            return gamma ** ((step - warmup_steps) // max(1, step_every))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def create_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """Exponential moving average of the weights and buffers: ``θ_ema ← decay·θ_ema + (1 − decay)·θ``."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"train: ema decay must be in (0, 1), got {decay!r}")
    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay),
                                               use_buffers=True)
