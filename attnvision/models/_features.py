"""``features_only=True``: a backbone's stage outputs as a list of NCHW maps."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._base import take_indices


def resolve_out_indices(model_name: str, num_stages: int, out_indices: Sequence[int] | None) -> tuple[int, ...]:
    return tuple(take_indices(model_name, num_stages, out_indices, arg="out_indices"))


class FeatureListNet(nn.Module):
    """Wrap a model that has ``feature_info``, ``forward_intermediates`` and ``prune_intermediate_layers``.

    The classifier, every stage after the last of ``out_indices`` and the final norm are removed, so
    every parameter left takes part in ``forward`` (DDP with ``find_unused_parameters=False``);
    ``forward(x)`` returns the maps of ``out_indices``, and ``feature_info`` describes them
    (``num_chs``, ``reduction``, ``module``). ``removed_keys`` are the state-dict keys that went.
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None):
        super().__init__()
        name = type(model).__name__
        if not hasattr(model, "forward_intermediates") or not hasattr(model, "feature_info"):
            raise ValueError(f"features_only: {name} does not expose stage outputs")
        info = getattr(model, "feature_info")  # any such model: ours, timm's
        self.out_indices = resolve_out_indices(name, len(info), out_indices)
        self.feature_info = FeatureInfo(dict(info[i]) for i in self.out_indices)
        before = set(model.state_dict())
        getattr(model, "prune_intermediate_layers")(self.out_indices, prune_norm=True, prune_head=True)
        self.removed_keys = before - set(model.state_dict())
        self.model = model
        self.pretrained_cfg = getattr(model, "pretrained_cfg", {})

    @property
    def default_cfg(self) -> dict:
        return self.pretrained_cfg

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return getattr(self.model, "forward_intermediates")(x, self.out_indices, intermediates_only=True)


class FeatureInfo(list):
    """timm's ``FeatureInfo``: the list of ``dict(num_chs, reduction, module)`` of a feature extractor's
    outputs, with ``channels()``, ``reduction()`` and ``module_name()`` (one entry's, or all)."""

    def _get(self, key: str, idx):
        if idx is None:
            return [info[key] for info in self]
        if isinstance(idx, int):
            return self[idx][key]
        return [self[i][key] for i in idx]

    def channels(self, idx=None):
        return self._get("num_chs", idx)

    def reduction(self, idx=None):
        return self._get("reduction", idx)

    def module_name(self, idx=None):
        return self._get("module", idx)

    def get_dicts(self, keys=None, idx=None):
        rows = self if idx is None else [self[i] for i in ([idx] if isinstance(idx, int) else idx)]
        return [dict(r) if keys is None else {k: r[k] for k in keys} for r in rows]
