"""Optimisers, learning-rate schedules and EMA for the trainer.

Weight decay applies to weights of convolutions and linear layers only: biases and
normalisation parameters (every parameter with fewer than two dimensions) are excluded, as in
the timm and torchvision recipes.
"""
from __future__ import annotations

import math

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


def create_optimizer(model: nn.Module, opt: str, lr: float, *, weight_decay: float, momentum: float = 0.9,
                     nesterov: bool = False) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)
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
