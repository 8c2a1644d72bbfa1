"""Input checks shared by the layers: errors name the module, the expectation and the value."""
from __future__ import annotations

import torch
from torch.fx._symbolic_trace import is_fx_symbolic_tracing


def is_tracing() -> bool:
    """True while ``torch.fx.symbolic_trace``, ``torch.jit.trace``/``script``, ``torch.compile`` or
    ``torch.export`` is recording a forward.

    Input checks step aside then: their values are proxies or symbolic sizes, and a Python ``if`` on
    them would fail (FX) or add guards that break dynamic shapes (export). Eager calls keep every check.
    """
    return (is_fx_symbolic_tracing() or torch.jit.is_tracing() or torch.jit.is_scripting()
            or torch.compiler.is_compiling())


def check_positive_int(module: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{module}: {name} must be a positive integer, got {value!r}")
    return value


def check_reduction(module: str, channels: int, reduction: int) -> int:
    """Validate ``channels`` / ``reduction`` and return the hidden width ``channels // reduction``."""
    check_positive_int(module, "channels", channels)
    check_positive_int(module, "reduction", reduction)
    if reduction > channels:
        raise ValueError(
            f"{module}: reduction={reduction} is larger than channels={channels}; "
            f"expected 1 <= reduction <= channels"
        )
    return channels // reduction


def check_choice(module: str, name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{module}: {name} must be one of {tuple(choices)}, got {value!r}")


def check_feature_map(module: str, x: torch.Tensor, channels: int | None = None) -> None:
    """Raise unless ``x`` is (B, C, H, W) with ``C == channels`` (when given); nothing while tracing."""
    if is_tracing():
        return
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{module}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{module}: expected a 4-D input (B, C, H, W), got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{module}: expected {channels} input channels, got {x.shape[1]} (input shape {tuple(x.shape)})"
        )
