"""The mechanisms' own attention maps, collected by layer name.

``attention_maps(model, images)`` switches on ``keep_attention`` of every
:class:`~attnvision.layers._base.AttentionLayer` (or of those named), runs one forward pass
without gradients, and returns what each layer kept, in the order the layers ran. The switches
and each layer's previous ``last_attention`` are restored afterwards, so a model costs nothing
extra when nobody asks.

Conventions for what a layer keeps (``self._keep(value)``; a dict keeps several maps, each
read by the same rules under the name ``<layer>.<key>``):

============  ==============================  =============================================
layout        shape                           meaning (display)
============  ==============================  =============================================
"channel"     (B, C)                          channel weights (SE, ECA, CBAM's M_c)
"spatial"     (B, 1, H, W)                    one spatial map (CBAM's M_s)
"map"         (B, C, H, W)                    a 3-D map (BAM's M(F), LKA's attention);
                                              shown as its mean over channels
"tokens"      (B, heads, Nq, Nk)              attention weights of Nq queries over Nk keys
                                              (rows are softmax distributions); shown for one
                                              query and one head (or the mean of the heads)
"local"       (B, heads, H, W, kh, kw)        weights of each query pixel over its kh×kw
                                              neighbourhood (local self-attention)
============  ==============================  =============================================

The layout is read from the shape, except that a 4-D tensor is "tokens" when the layer says so
(class attribute ``attention_layout = "tokens"``, or a dict ``{key: layout}`` for dict maps) or
when its last dimension is a probability distribution (non-negative, rows summing to one);
otherwise it is "spatial" (C = 1) or "map". Token grids are found from N and the image's aspect
ratio, a leading class token allowed (or the model's ``num_prefix_tokens`` leading tokens; see
``token_grid``); a layer may instead set an ``attention_grid = (h, w)`` attribute.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import torch
from torch import nn

from .._suggest import unknown_name_error
from ..layers._base import AttentionLayer, collect_attention
from ._grid import token_grid

LAYOUTS = ("channel", "spatial", "map", "tokens", "local")


@dataclass
class AttentionMap:
    """One kept attention map: ``value`` as the layer stored it, and how to read it."""

    name: str
    layout: str
    value: torch.Tensor
    image_hw: tuple[int, int]
    grid: tuple[int, int] | None = None   # a layer's ``attention_grid``, if it set one
    prefix_tokens: int | None = None      # the model's ``num_prefix_tokens``, if it has one

    def _grid(self, n: int) -> tuple[int, int, int]:
        if self.grid is not None:
            h, w = self.grid
            if h * w in (n, n - 1):
                return h, w, n - h * w
            raise ValueError(f"attention map {self.name!r}: attention_grid {self.grid} does not fit {n} tokens")
        return token_grid(f"attention map {self.name!r}", n, self.image_hw, self.prefix_tokens)

    def query_grid(self) -> tuple[int, int, int]:
        """``(h, w, extra)`` of the queries ("tokens" and "local" maps)."""
        if self.layout == "tokens":
            return self._grid(self.value.shape[2])
        if self.layout == "local":
            return self.value.shape[2], self.value.shape[3], 0
        raise ValueError(f"attention map {self.name!r}: a {self.layout!r} map has no queries")

    def channel_weights(self) -> torch.Tensor:
        """(B, C) channel weights of a "channel" map."""
        if self.layout != "channel":
            raise ValueError(f"attention map {self.name!r}: channel_weights() needs a 'channel' map, "
                             f"this one is {self.layout!r}")
        return self.value

    def resolve_query(self, query=None) -> tuple[int, int | None, int | None]:
        """``(index among the Nq queries, row, col)`` of a query (see ``spatial``); row and col are
        None for a leading (class) token."""
        qh, qw, q_extra = self.query_grid()
        if query is None:
            query = 0 if q_extra else (qh // 2, qw // 2)
        if isinstance(query, int) and not isinstance(query, bool):
            if self.layout == "local":
                raise ValueError(f"attention map {self.name!r}: a local map's query is a (row, col) pixel, "
                                 f"got {query}")
            if not 0 <= query < qh * qw + q_extra:
                raise ValueError(f"attention map {self.name!r}: query index {query} outside [0, {qh * qw + q_extra})")
            if query < q_extra:
                return query, None, None
            return query, (query - q_extra) // qw, (query - q_extra) % qw
        try:
            row, col = (int(t) for t in query)
        except (TypeError, ValueError):
            raise TypeError(f"attention map {self.name!r}: query must be None, an int or (row, col), "
                            f"got {query!r}") from None
        if not (0 <= row < qh and 0 <= col < qw):
            raise ValueError(f"attention map {self.name!r}: query {(row, col)} outside the {qh}×{qw} grid")
        return q_extra + row * qw + col, row, col

    def spatial(self, query=None, head: int | None = None) -> torch.Tensor:
        """The map as (B, h, w) for display.

        "spatial": the map; "map": its mean over channels; "tokens" and "local": the weights of one
        query over the keys, for ``head`` (None: the mean over heads). ``query`` is a (row, col)
        pixel of the query grid, an int index into the Nq queries, or None: the class token if
        there is one, else the centre pixel. Keys outside the image (a local window at the border)
        are not drawn; a class-token key is left out of the picture.
        """
        v = self.value
        if self.layout == "spatial":
            return v[:, 0]
        if self.layout == "map":
            return v.mean(1)
        if self.layout == "channel":
            raise ValueError(f"attention map {self.name!r}: channel weights have no spatial layout; "
                             f"use channel_weights()")
        heads = v.shape[1]
        if head is not None and not (isinstance(head, int) and -heads <= head < heads):
            raise ValueError(f"attention map {self.name!r}: head must be None or an index below {heads}, "
                             f"got {head!r}")
        index, row, col = self.resolve_query(query)
        qh, qw, _ = self.query_grid()
        if self.layout == "tokens":
            kh, kw, k_extra = self._grid(v.shape[3])
            weights = v[:, :, index, k_extra:]                                    # (B, heads, kh·kw)
            weights = weights.mean(1) if head is None else weights[:, head]
            return weights.reshape(v.shape[0], kh, kw)
        assert row is not None and col is not None  # a local map's query is a pixel
        window = v[:, :, row, col]                                                # (B, heads, kh, kw)
        window = window.mean(1) if head is None else window[:, head]
        wh, ww = window.shape[-2:]
        canvas = window.new_zeros(v.shape[0], qh, qw)
        r0, c0 = row - wh // 2, col - ww // 2
        rs, cs = slice(max(r0, 0), min(r0 + wh, qh)), slice(max(c0, 0), min(c0 + ww, qw))
        canvas[:, rs, cs] = window[:, rs.start - r0:rs.stop - r0, cs.start - c0:cs.stop - c0]
        return canvas


def _is_distribution(x: torch.Tensor) -> bool:
    return bool(x.numel()) and bool(x.min() >= 0) and bool(((x.sum(-1) - 1).abs() < 1e-3).all())


def _layout(layer: nn.Module, name: str, key, value: torch.Tensor) -> str:
    declared = getattr(layer, "attention_layout", "auto")
    if isinstance(declared, dict):
        declared = declared.get(key, "auto")
    if declared not in ("auto", *LAYOUTS):
        raise ValueError(f"attention_maps: layer {name!r} declares attention_layout={declared!r}; expected "
                         f"'auto' or one of {LAYOUTS}")
    if declared != "auto":
        return declared
    if value.dim() == 2:
        return "channel"
    if value.dim() == 4:
        if _is_distribution(value):
            return "tokens"
        return "spatial" if value.shape[1] == 1 else "map"
    if value.dim() == 6:
        return "local"
    raise ValueError(f"attention_maps: layer {name!r} kept a tensor of shape {tuple(value.shape)}; expected "
                     f"(B, C), (B, 1, H, W), (B, C, H, W), (B, heads, Nq, Nk) or (B, heads, H, W, kh, kw)")


def attention_layers(model: nn.Module, names=None) -> list[tuple[str, AttentionLayer]]:
    """The model's attention layers ``(name, layer)``; ``names`` filters by fnmatch patterns."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, AttentionLayer)]
    if names is None:
        return layers
    if isinstance(names, str):
        names = [names]
    for pattern in names:
        if not any(fnmatch.fnmatchcase(n, pattern) for n, _ in layers):
            raise unknown_name_error(f"attention_maps ({type(model).__name__} attention layer)", pattern,
                                     [n for n, _ in layers])
    return [(n, m) for n, m in layers if any(fnmatch.fnmatchcase(n, p) for p in names)]


def attention_maps(model: nn.Module, images: torch.Tensor, *, names=None, return_logits: bool = False):
    """Every attention layer's map for ``images``: ``{name: AttentionMap}`` in the order the layers ran.

    Args:
        model: any module; its :class:`AttentionLayer` submodules are read (none: an empty dict).
        images: (B, C, H, W), normalised as the model expects. The model runs once, in eval mode
            and without gradients; each module's train/eval state is restored.
        names: fnmatch patterns of the layer names to collect (default: all).
        return_logits: also return the model's output, ``(maps, output)``.

    A dict map is listed under ``<layer>.<key>``; a layer that runs k > 1 times in one pass gives
    ``<layer>``, ``<layer>#2``, … ``<layer>#k``.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"attention_maps: expected images of shape (B, C, H, W), got {got}")
    layers = attention_layers(model, names)
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            collected, output = collect_attention(model, images, layers=layers, return_output=True)
    finally:
        for m, training in modes:
            m.training = training
    named = dict(layers)
    image_hw = (images.shape[-2], images.shape[-1])
    prefix = getattr(model, "num_prefix_tokens", None)
    maps: dict[str, AttentionMap] = {}
    for name, value in collected.items():
        module = named[name.split("#")[0]]
        grid = getattr(module, "attention_grid", None)
        entries = value.items() if isinstance(value, dict) else [(None, value)]
        for key, tensor in entries:
            full = name if key is None else f"{name}.{key}"
            maps[full] = AttentionMap(full, _layout(module, name, key, tensor), tensor, image_hw, grid, prefix)
    return (maps, output) if return_logits else maps


def query_maps(maps: dict[str, AttentionMap], query=None, head: int | None = None) -> dict[str, torch.Tensor]:
    """One query's attention through successive layers: ``{name: (B, h, w)}`` for every "tokens" and
    "local" map, in network order (for evolving attention, how the map evolves from layer to layer)."""
    return {n: m.spatial(query, head) for n, m in maps.items() if m.layout in ("tokens", "local")}
