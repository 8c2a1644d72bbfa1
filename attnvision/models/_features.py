"""``features_only=True``: a backbone's stage outputs as a list of NCHW maps."""
from __future__ import annotations

import inspect
from typing import Sequence

import torch
from torch import nn


def resolve_out_indices(model_name: str, num_stages: int, out_indices: Sequence[int] | None) -> tuple[int, ...]:
    if out_indices is None:
        return tuple(range(num_stages))
    resolved = []
    for i in out_indices:
        j = i + num_stages if isinstance(i, int) and i < 0 else i
        if not isinstance(j, int) or not 0 <= j < num_stages:
            raise ValueError(f"{model_name}: out_indices must index its {num_stages} stages, got {tuple(out_indices)}")
        resolved.append(j)
    return tuple(sorted(set(resolved)))


class FeatureListNet(nn.Module):
    """Wrap a model that has ``feature_info`` and ``forward_intermediates(x, indices)``.

    The classifier is removed; ``forward(x)`` returns the maps of ``out_indices``, and
    ``feature_info`` describes them (``num_chs``, ``reduction``, ``module``).
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None):
        super().__init__()
        name = type(model).__name__
        if not hasattr(model, "forward_intermediates") or not hasattr(model, "feature_info"):
            raise ValueError(f"features_only: {name} does not expose stage outputs")
        self.out_indices = resolve_out_indices(name, len(model.feature_info), out_indices)
        # timm's forward_intermediates returns (final, maps) unless asked for the maps only
        takes = inspect.signature(model.forward_intermediates).parameters
        self._kwargs = {"intermediates_only": True} if "intermediates_only" in takes else {}
        self.feature_info = [dict(model.feature_info[i]) for i in self.out_indices]
        model.reset_classifier(0)
        self.model = model
        self.pretrained_cfg = getattr(model, "pretrained_cfg", {})

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, list(self.out_indices), **self._kwargs)
