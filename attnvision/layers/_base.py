"""Behaviour every attention layer shares: optionally keeping its last attention map; an initialiser."""
from __future__ import annotations

import math
import re

import torch
from torch import nn

# std of a unit normal truncated to ±2: TensorFlow divides by it so that the truncated draws keep the asked std
_TRUNC2_STD = 0.87962566103423978


def tf_variance_scaling_(weight: torch.Tensor) -> torch.Tensor:
    """TensorFlow 1's ``tf.variance_scaling_initializer()`` with its defaults (scale 1, fan-in,
    truncated normal): N(0, σ²) truncated to ±2σ, σ = √(1/fan_in) / 0.8796, so that the draws have
    std √(1/fan_in)."""
    std = math.sqrt(1.0 / weight[0].numel()) / _TRUNC2_STD
    return nn.init.trunc_normal_(weight, 0.0, std, -2.0 * std, 2.0 * std)


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


def collect_attention(model: nn.Module, *args, layers=None, return_output: bool = False, **kwargs):
    """Run ``model(*args, **kwargs)`` once and return every attention layer's map, in the order computed.

    ``{module name: last_attention}``; in a network of evolving attention this is how one map
    evolves through the layers. A layer that runs k > 1 times in the pass gives ``name``,
    ``name#2``, … ``name#k``. ``layers`` restricts collection to these ``(name, layer)`` pairs.
    Each layer's ``keep_attention`` switch and ``last_attention`` are restored afterwards, so
    nothing stays in memory. With ``return_output`` the model's output comes back too.
    """
    if layers is None:
        layers = [(name, m) for name, m in model.named_modules() if isinstance(m, AttentionLayer)]
    saved = [(m, m.__dict__.get("keep_attention"), m.last_attention) for _, m in layers]
    kept: dict[str, object] = {}
    calls: dict[str, int] = {}

    def make_hook(name):
        def hook(module, args, output):
            calls[name] = calls.get(name, 0) + 1
            if module.last_attention is not None:
                kept[name if calls[name] == 1 else f"{name}#{calls[name]}"] = module.last_attention
        return hook

    handles = [m.register_forward_hook(make_hook(name)) for name, m in layers]
    try:
        for _, m in layers:
            m.keep_attention = True
            m.last_attention = None
        output = model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
        for m, switch, last in saved:
            if switch is None:
                m.__dict__.pop("keep_attention", None)  # back to the class default
            else:
                m.keep_attention = switch
            m.last_attention = last
    return (kept, output) if return_output else kept
