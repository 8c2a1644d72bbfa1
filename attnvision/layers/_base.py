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
