"""Convolutional Block Attention Module (Woo, Park, Lee and Kweon, "CBAM", ECCV 2018).

    F'  = M_c(F) ⊗ F,   F'' = M_s(F') ⊗ F'                               (eq. 1)
    M_c(F) = σ(MLP(AvgPool(F)) + MLP(MaxPool(F)))     one shared MLP C → C/r → C   (eq. 2)
    M_s(F) = σ(f^{7×7}([AvgPool_c(F); MaxPool_c(F)]))  pooling across channels      (eq. 3)

Defaults r = 16, 7×7 kernel, both poolings. As in the authors' code, the spatial
input is ordered [max, mean], the 7×7 conv has no bias and is followed by
BatchNorm2d(1) (momentum 0.01). The paper's ablations are switches:
``pool_types`` for the channel gate, as the authors' ``pool_types`` (Jongchan/attention-module
``MODELS/cbam.py``, ``ChannelGate``: their ``SpatialGate`` always pools [max, mean] whatever
``pool_types`` says), any non-empty set of their four global poolings of each channel's H×W map x,
whose MLP outputs are summed in the order given:

    avg:  (1/HW) Σ_ij x_ij                        max:  max_ij x_ij
    lp:   (Σ_ij x_ij²)^(1/2)                      (their ``F.lp_pool2d(x, 2, (H, W))``: p = 2, no 1/HW)
    lse:  log Σ_ij exp(x_ij) = m + log Σ_ij exp(x_ij − m),  m = max_ij x_ij   (their ``logsumexp_2d``)

(``lp``'s gradient at an all-zero map is 0 here, where ``lp_pool2d``'s square root gives NaN);
``spatial_pool_types`` for the spatial gate's poolings (avg, max or both; default both, kept in the
order [max, mean]); ``spatial_reduce="conv"`` for the paper's Table 2 alternative to that pooling,
"1×1 conv": a 1×1 convolution (no bias) reduces the C channels to one map, which the k×k conv then
reads (one input channel instead of two: C − k² parameters more a module), the rest of the gate
unchanged; ``order`` ("channel_first", "spatial_first", or "parallel" = F ⊗ M_c(F) ⊗ M_s(F)); and
``channel`` / ``spatial`` to drop a gate.
"""
from __future__ import annotations

import torch
from torch import nn

from ._base import AttentionLayer
from ._checks import check_choice, check_feature_map, check_positive_int, check_reduction
from .adaptive_pool import channel_max, global_max

_POOLS = ("avg", "max")                      # the paper's, and the spatial gate's only ones
CHANNEL_POOLS = ("avg", "max", "lp", "lse")   # the authors' ChannelGate's
_ORDERS = ("channel_first", "spatial_first", "parallel")
_REDUCES = ("pool", "conv")


def _check_pool_types(pool_types, name: str = "pool_types",
                      allowed: tuple[str, ...] = CHANNEL_POOLS) -> tuple[str, ...]:
    if isinstance(pool_types, str):
        raise ValueError(f"CBAM: {name} must be a non-empty subset of {allowed} given as a sequence, e.g. "
                         f"({pool_types!r},), got the string {pool_types!r}")
    pool_types = tuple(pool_types)
    unknown = [p for p in pool_types if p not in allowed]
    if not pool_types or unknown or len(set(pool_types)) != len(pool_types):
        why = (f"unknown {unknown!r}" if unknown else "empty" if not pool_types else "repeated entries")
        raise ValueError(f"CBAM: {name} must be a non-empty subset of {allowed}, got {pool_types!r} ({why})")
    return pool_types


def _pool_map(x: torch.Tensor, kind: str) -> torch.Tensor:
    """One of the channel gate's poolings of a (B, C, H, W) map over H×W (module docstring): (B, C)."""
    if kind == "avg":
        return x.mean((2, 3))
    if kind == "max":
        return global_max(x)
    if kind == "lp":
        return torch.linalg.vector_norm(x, 2, dim=(2, 3))
    return torch.logsumexp(x.flatten(2), -1)  # "lse", stable: max + log Σ exp(x − max)


class CBAMChannelGate(nn.Module):
    """M_c before the sigmoid: the shared MLP applied to each pooled descriptor, summed; returns (B, C)."""

    def __init__(self, channels: int, hidden: int, pool_types=_POOLS):
        super().__init__()
        self.pool_types = _check_pool_types(pool_types)
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [_pool_map(x, p) for p in self.pool_types]
        z = self.fc2(self.act(self.fc1(torch.cat(pooled, 0))))  # one MLP call for all descriptors
        return z.view(len(pooled), x.shape[0], -1).sum(0)


class CBAMSpatialGate(nn.Module):
    """M_s before the sigmoid: [max; mean] across channels (or, with ``channels``, a 1×1 conv C → 1)
    → k×k conv → BN; returns (B, 1, H, W)."""

    def __init__(self, kernel_size: int = 7, pool_types=_POOLS, channels: int | None = None):
        super().__init__()
        self.pool_types = () if channels else tuple(p for p in ("max", "avg") if p in pool_types)
        self.reduce = nn.Conv2d(channels, 1, 1, bias=False) if channels else None
        self.conv = nn.Conv2d(len(self.pool_types) or 1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reduce is not None:
            return self.bn(self.conv(self.reduce(x)))  # (B, 1, H, W) before the k×k conv
        pooled = [channel_max(x) if p == "max" else x.mean(1, keepdim=True) for p in self.pool_types]
        return self.bn(self.conv(torch.cat(pooled, 1)))


class CBAM(AttentionLayer):
    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7,
                 pool_types=("avg", "max"), order: str = "channel_first", *,
                 channel: bool = True, spatial: bool = True, spatial_pool_types=None, spatial_reduce: str = "pool"):
        super().__init__()
        hidden = check_reduction("CBAM", channels, reduction)
        check_positive_int("CBAM", "spatial_kernel", spatial_kernel)
        if spatial_kernel % 2 == 0:
            raise ValueError(f"CBAM: spatial_kernel must be odd to keep H×W, got {spatial_kernel}")
        pool_types = _check_pool_types(pool_types)
        check_choice("CBAM", "spatial_reduce", spatial_reduce, _REDUCES)
        if spatial_reduce == "conv" and spatial_pool_types is not None:
            raise ValueError(f"CBAM: spatial_reduce='conv' replaces the spatial pooling; spatial_pool_types must be "
                             f"left unset, got {spatial_pool_types!r}")
        spatial_pool_types = _check_pool_types(("max", "avg") if spatial_pool_types is None else spatial_pool_types,
                                               "spatial_pool_types", _POOLS)
        check_choice("CBAM", "order", order, _ORDERS)
        if not (channel or spatial):
            raise ValueError("CBAM: at least one of channel=True or spatial=True is needed")
        self.channels = channels
        self.order = order
        self.channel = CBAMChannelGate(channels, hidden, pool_types) if channel else None
        self.spatial = (CBAMSpatialGate(spatial_kernel, spatial_pool_types,
                                        channels if spatial_reduce == "conv" else None) if spatial else None)

    def _channel_map(self, x, maps):
        if self.channel is None:
            return None
        maps["channel"] = mc = torch.sigmoid(self.channel(x))  # (B, C)
        return mc[:, :, None, None]

    def _spatial_map(self, x, maps):
        if self.spatial is None:
            return None
        maps["spatial"] = ms = torch.sigmoid(self.spatial(x))  # (B, 1, H, W)
        return ms

    @staticmethod
    def _gate(x, m):
        return x if m is None else x * m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map("CBAM", x, self.channels)
        maps: dict[str, torch.Tensor] = {}
        if self.order == "channel_first":
            x = self._gate(x, self._channel_map(x, maps))
            out = self._gate(x, self._spatial_map(x, maps))
        elif self.order == "spatial_first":
            x = self._gate(x, self._spatial_map(x, maps))
            out = self._gate(x, self._channel_map(x, maps))
        else:  # parallel: both maps are computed from F
            mc, ms = self._channel_map(x, maps), self._spatial_map(x, maps)
            out = self._gate(self._gate(x, mc), ms)
        self._keep(maps)
        return out

    def official_key_rules(self):
        return [(r"^ChannelGate\.mlp\.1\.", "channel.fc1."), (r"^ChannelGate\.mlp\.3\.", "channel.fc2."),
                (r"^SpatialGate\.spatial\.", "spatial.")]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, order={self.order!r}"
