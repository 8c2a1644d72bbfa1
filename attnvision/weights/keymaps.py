"""Key maps: renaming the keys of another code base's checkpoint into ours.

A family that reads an official layout defines ``checkpoint_filter_fn(state_dict, model)`` (as timm
does) built from :func:`remap_keys` rules next to its model code.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, Mapping

import torch

# (pattern, replacement): a template or a function of the match, as ``re.sub`` takes
KeyRule = tuple[str, str | Callable[[re.Match[str]], str]]


def remap_keys(state_dict: Mapping[str, torch.Tensor], rules: Iterable[KeyRule]) -> dict[str, torch.Tensor]:
    """Rename keys by regular-expression rules (``re.sub`` of each rule, in order)."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out = {}
    for k, v in state_dict.items():
        for p, r in compiled:
            k = p.sub(r, k)
        out[k] = v
    return out
