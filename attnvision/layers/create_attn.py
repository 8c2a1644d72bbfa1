"""String factory for the plug-in attention modules: ``create_attn("cbam", channels)``."""
from __future__ import annotations

from typing import Callable

from torch import nn

from .._suggest import unknown_name_error
from .bam import BAM
from .cbam import CBAM
from .eca import ECA
from .squeeze_excite import SE

_ATTN_LAYERS: dict[str, Callable[..., nn.Module]] = {"se": SE, "eca": ECA, "bam": BAM, "cbam": CBAM}


def register_attn(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``create_attn(name, channels, **kwargs)`` build ``factory(channels, **kwargs)``."""
    _ATTN_LAYERS[name.lower()] = factory


def attn_names() -> list[str]:
    return sorted(_ATTN_LAYERS)


def create_attn(kind: str | None, channels: int, **kwargs) -> nn.Module:
    """Build the attention module ``kind`` for ``channels`` channels; ``None``/"none" gives nn.Identity."""
    if kind is None or (isinstance(kind, str) and kind.lower() == "none"):
        return nn.Identity()
    if not isinstance(kind, str):
        raise TypeError(f"create_attn: kind must be a string or None, got {type(kind).__name__}")
    factory = _ATTN_LAYERS.get(kind.lower())
    if factory is None:
        raise unknown_name_error("create_attn", kind, list(_ATTN_LAYERS) + ["none"])
    return factory(channels, **kwargs)
