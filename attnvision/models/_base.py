"""The interface every attnvision classifier honours (timm's), and model metadata helpers."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def make_cfg(*, paper: str, input_size=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
             crop_pct: float = 0.875, **extra) -> dict:
    """``pretrained_cfg``: preprocessing and provenance. ``paper_*`` keys hold the paper's reported numbers."""
    return dict(input_size=tuple(input_size), mean=tuple(mean), std=tuple(std), crop_pct=crop_pct,
                paper=paper, **extra)


class Backbone(nn.Module):
    """The timm interface: ``forward = forward_head ∘ forward_features``.

    Subclasses set ``num_classes``, ``num_features``, ``feature_info``, ``pretrained_cfg``,
    implement ``forward_features``, ``forward_head`` and ``forward_intermediates(x, indices)``,
    and name their classifier's attribute path in ``classifier_path``.
    """

    classifier_path = "head.fc"
    drop_rate: float = 0.0
    num_classes: int
    num_features: int
    pretrained_cfg: dict
    feature_info: list

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool → dropout (``self.drop_rate``) → the classifier; families with another
        head override it."""
        x = x.mean((2, 3))
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.get_classifier()(x)

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.classifier_path)

    def reset_classifier(self, num_classes: int) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"{type(self).__name__}: num_classes must be a non-negative integer, got {num_classes!r}")
        parent_path, _, attr = self.classifier_path.rpartition(".")
        parent = self.get_submodule(parent_path) if parent_path else self
        old = getattr(parent, attr)
        device = old.weight.device if isinstance(old, nn.Linear) else None
        new = nn.Linear(self.num_features, num_classes, device=device) if num_classes > 0 else nn.Identity()
        setattr(parent, attr, new)
        self.num_classes = num_classes


def init_fan_out_trunc_normal(m: nn.Module) -> None:
    """He-normal on fan-out for convolutions, truncated normal (std 0.02) for linear layers, zero
    biases: the initialisation of the VAN and CoAtNet reference code. Use with ``model.apply``."""
    if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def run_stages(x: torch.Tensor, stages, indices=None, after=None) -> list[torch.Tensor]:
    """Apply ``stages`` in turn (then ``after[i]``, e.g. a between-stage attention, when given) and
    return the outputs at ``indices`` (all stages when None), stopping after the last one asked for."""
    indices = range(len(stages)) if indices is None else indices
    feats, stop = [], max(indices)
    for i, stage in enumerate(stages):
        x = stage(x)
        if after is not None:
            x = after[i](x)
        if i in indices:
            feats.append(x)
        if i == stop:
            break
    return feats


def stage_info(channels, reductions, module_fmt: str) -> list[dict]:
    """``feature_info`` entries for stages of the given widths and strides."""
    return [dict(num_chs=c, reduction=r, module=module_fmt.format(i + 1))
            for i, (c, r) in enumerate(zip(channels, reductions))]


def check_image(model_name: str, x: torch.Tensor, in_chans: int) -> None:
    """Raise unless ``x`` is a (B, in_chans, H, W) tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model_name}: expected an image tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"{model_name}: expected input of shape (B, {in_chans}, H, W), got {tuple(x.shape)}")


def register_variant(name: str, build: Callable[..., nn.Module], doc: str):
    """Register ``name`` as a builder ``(*, num_classes, in_chans, **kwargs) -> build(num_classes, in_chans, **kwargs)``."""

    def builder(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> nn.Module:
        return build(num_classes, in_chans, **kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    return register_model(builder)
