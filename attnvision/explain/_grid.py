"""Token sequences back to 2-D maps: which h×w grid (and whether a class token) N tokens come from."""
from __future__ import annotations

import torch


def token_grid(who: str, n_tokens: int, image_hw) -> tuple[int, int, int]:
    """``(h, w, extra)`` with ``h·w + extra = n_tokens``, ``extra`` ∈ {0, 1} leading class token.

    The grid must be an image of size H×W seen at one stride s (h ≈ H/s and w ≈ W/s, up to the
    rounding of a strided layer). A grid without a class token is preferred; among equals, the one
    whose aspect ratio is closest to the image's.
    """
    height, width = (int(v) for v in image_hw)
    best = None
    for extra in (0, 1):
        m = n_tokens - extra
        for h in range(1, m + 1):
            if m % h:
                continue
            w = m // h
            # consistent with one stride s = H/h: W/s must round to w, and H/(W/w) to h
            if abs(width * h / height - w) > 1 or abs(height * w / width - h) > 1:
                continue
            key = (extra, abs(h * width - w * height))
            if best is None or key < best[0]:
                best = (key, (h, w, extra))
        if best is not None:
            return best[1]
    raise ValueError(
        f"{who}: cannot lay out {n_tokens} tokens as an h×w grid of the {height}×{width} image "
        f"(optionally after one class token); give the layer an `attention_grid = (h, w)` attribute "
        f"or choose another layer")


def tokens_to_map(who: str, x: torch.Tensor, image_hw) -> torch.Tensor:
    """(B, N, C) tokens → (B, C, h, w), dropping a leading class token if N = 1 + h·w."""
    h, w, extra = token_grid(who, x.shape[1], image_hw)
    b, _, c = x.shape
    return x[:, extra:].transpose(1, 2).reshape(b, c, h, w)  # (B, C, h, w)
