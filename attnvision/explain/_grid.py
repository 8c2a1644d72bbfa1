"""Token sequences back to 2-D maps: which h×w grid (and whether a class token) N tokens come from."""
from __future__ import annotations

import torch


def _one_stride(height: int, width: int, h: int, w: int) -> bool:
    """Whether one stride s gives h = ⌊H/s⌋ and w = ⌊W/s⌋, or h = ⌈H/s⌉ and w = ⌈W/s⌉."""
    floor = max(height / (h + 1), width / (w + 1)) < min(height / h, width / w)
    ceil = max(height / h, width / w) < min(height / (h - 1) if h > 1 else float("inf"),
                                             width / (w - 1) if w > 1 else float("inf"))
    return floor or ceil


def token_grid(who: str, n_tokens: int, image_hw, prefix_tokens: int | None = None) -> tuple[int, int, int]:
    """``(h, w, extra)`` with ``h·w + extra = n_tokens``: ``extra`` leading tokens (a class token) before the grid.

    ``extra`` is ``prefix_tokens`` when given (a model's ``num_prefix_tokens``, as timm's ViTs
    have for class, distillation and register tokens), else 0 or 1.

    The grid must be the H×W image seen at one stride s, rounded down or up in both directions
    alike (as strided convolutions and patch embeddings do). A grid without a class token is
    preferred; among equals, the one whose aspect ratio is closest to the image's.
    """
    height, width = (int(v) for v in image_hw)
    best = None
    for extra in (0, 1) if prefix_tokens is None else (prefix_tokens,):
        m = n_tokens - extra
        for h in range(1, m + 1):
            if m % h == 0 and _one_stride(height, width, h, m // h):
                key = (extra, abs(h * width - (m // h) * height))
                if best is None or key < best[0]:
                    best = (key, (h, m // h, extra))
        if best is not None:
            return best[1]
    raise ValueError(
        f"{who}: cannot lay out {n_tokens} tokens as an h×w grid of the {height}×{width} image "
        f"(after {'0 or 1' if prefix_tokens is None else prefix_tokens} leading tokens); give the layer an "
        f"`attention_grid = (h, w)` attribute or choose another layer")


def tokens_to_map(who: str, x: torch.Tensor, image_hw, prefix_tokens: int | None = None) -> torch.Tensor:
    """(B, N, C) tokens → (B, C, h, w), dropping leading tokens (a class token if N = 1 + h·w)."""
    h, w, extra = token_grid(who, x.shape[1], image_hw, prefix_tokens)
    b, _, c = x.shape
    return x[:, extra:].transpose(1, 2).reshape(b, c, h, w)  # (B, C, h, w)
