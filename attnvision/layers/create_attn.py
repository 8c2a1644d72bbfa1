"""String factory for the plug-in attention modules: ``create_attn("cbam", channels)``.

Attention kinds are plug-ins of one :class:`~attnvision.registry.Registry`: ``register_attn("mine",
MyGate)`` makes ``create_attn("mine", channels)``, ``attach(model, "mine")`` and every family's
``attn="mine"`` (``create_model("resnet50", attn="mine")``) build ``MyGate(channels, **kwargs)``.
A kind is placed inside every block (``placement="block"``: SE, ECA, CBAM) or between the stages of
a network (``placement="stage"``: BAM, at the bottlenecks of the network).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..registry import Registry
from .bam import BAM
from .cbam import CBAM
from .eca import ECA
from .squeeze_excite import SE

PLACEMENTS = ("block", "stage")


@dataclass(frozen=True)
class AttnKind:
    """A registered attention kind: ``factory(channels, **kwargs) -> nn.Module`` and where it goes."""

    factory: Callable[..., nn.Module]
    placement: str = "block"


ATTN_KINDS: Registry[AttnKind] = Registry("attention kind", lower=True)


def register_attn(name: str, factory: Callable[..., nn.Module], *, placement: str = "block",
                  override: bool = False) -> None:
    """Make ``create_attn(name, channels, **kwargs)`` build ``factory(channels, **kwargs)``.

    ``placement``: ``"block"`` (inside every residual block, after its last convolution) or ``"stage"``
    (between stages). A name is registered once; ``override=True`` replaces a kind on purpose.
    """
    if not callable(factory):
        raise TypeError(f"register_attn: factory must be callable (channels, **kwargs) -> nn.Module, got {factory!r}")
    if placement not in PLACEMENTS:
        raise ValueError(f"register_attn: placement must be one of {PLACEMENTS}, got {placement!r}")
    if isinstance(name, str) and name.lower() == "none":
        raise ValueError("register_attn: 'none' means no attention and cannot be registered")
    ATTN_KINDS.register(name, AttnKind(factory, placement), override=override, who="register_attn")


for _name, _factory, _placement in (("se", SE, "block"), ("eca", ECA, "block"), ("bam", BAM, "stage"),
                                    ("cbam", CBAM, "block")):
    register_attn(_name, _factory, placement=_placement)


def attn_names() -> list[str]:
    return ATTN_KINDS.names()


def attn_placement(kind: str, who: str = "create_attn") -> str:
    """Where the registered ``kind`` goes: ``"block"`` or ``"stage"``."""
    return ATTN_KINDS.get(kind, who).placement


def check_attn(who: str, kind) -> str | None:
    """``kind`` as a registered attention kind (lower case) or None; a clear error naming ``who`` otherwise."""
    if kind is None or (isinstance(kind, str) and kind.lower() == "none"):
        return None
    if not isinstance(kind, str):
        raise TypeError(f"{who}: attn must be None or the name of a registered attention kind, got {kind!r}")
    ATTN_KINDS.get(kind, f"{who}: attn")
    return kind.lower()


def create_attn(kind: str | None, channels: int, **kwargs) -> nn.Module:
    """Build the attention module ``kind`` for ``channels`` channels; ``None``/"none" gives nn.Identity."""
    if kind is None or (isinstance(kind, str) and kind.lower() == "none"):
        return nn.Identity()
    if not isinstance(kind, str):
        raise TypeError(f"create_attn: kind must be a string or None, got {type(kind).__name__}")
    return ATTN_KINDS.get(kind, "create_attn").factory(channels, **kwargs)
