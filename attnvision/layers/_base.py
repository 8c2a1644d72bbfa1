"""Behaviour every attention layer shares: optionally keeping its last attention map."""
from __future__ import annotations

import re

from torch import nn


class AttentionLayer(nn.Module):
    """Base of the attention layers.

    Set ``layer.keep_attention = True`` and the next forward stores its attention map(s),
    detached, in ``layer.last_attention``; when off (the default) nothing is kept or paid.
    """

    keep_attention: bool = False

    def __init__(self):
        super().__init__()
        self.last_attention = None

    def _keep(self, attention):
        if self.keep_attention:
            if isinstance(attention, dict):
                attention = {k: v.detach() for k, v in attention.items()}
            else:
                attention = attention.detach()
            self.last_attention = attention

    def official_key_rules(self) -> list[tuple[str, str]]:
        """(regex, replacement) pairs from the authors' key names (relative to this module) to ours."""
        return []

    def convert_official_key(self, key: str) -> str:
        for pattern, repl in self.official_key_rules():
            key = re.sub(pattern, repl, key)
        return key

    def checkpoint_filter_fn(self, state_dict, model=None):
        """The authors' state_dict of this module → ours (``load_checkpoint(source="official")``)."""
        return {self.convert_official_key(k): v for k, v in state_dict.items()}


def collect_attention(model: nn.Module, *args, **kwargs) -> dict:
    """Run ``model(*args, **kwargs)`` once and return every attention layer's map, in the order computed.

    ``{module name: last_attention}``; in a network of evolving attention this is how one map
    evolves through the layers. ``keep_attention`` is restored afterwards.
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, AttentionLayer)]
    order, hooks, kept = [], [], {}
    for name, m in layers:
        kept[name] = m.keep_attention
        m.keep_attention = True
        hooks.append(m.register_forward_hook(lambda mod, inp, out, name=name: order.append(name)))
    try:
        model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
        for name, m in layers:
            m.keep_attention = kept[name]
    named = dict(layers)
    return {name: named[name].last_attention for name in order if named[name].last_attention is not None}
