"""Bottleneck Attention Module (Park, Woo, Lee and Kweon, "BAM", BMVC 2018).

    M(F) = σ(M_c(F) + M_s(F))                                 (eq. 1)
    F'   = F + F ⊙ M(F)                                       (eq. 1)
    M_c(F) = BN(MLP(AvgPool(F))) ∈ R^{C×1×1}                  (eq. 2; MLP C → C/r → C)
    M_s(F) = BN(f3^{1×1}(f2^{3×3}(f1^{3×3}(f0^{1×1}(F))))) ∈ R^{1×H×W}   (eq. 3; 3×3 dilated by d)

Defaults r = 16, d = 4, two dilated convolutions. Both forms share the layers of the authors'
released code (Jongchan/attention-module ``MODELS/bam.py``): BatchNorm1d + ReLU after the first
Linear of the channel MLP; each spatial conv (with bias) followed by BN + ReLU except the final
1×1 to one channel.

- ``combine="sum"`` (default) is the paper: σ(M_c + M_s), with the BN at the end of each branch
  that eqs. 2–3 write, which adjusts the scale of each map before the two are added (Sec. 3): a
  BatchNorm1d(C) after the MLP and a BatchNorm2d(1) after the final 1×1 conv, 2C + 2 parameters
  more than the released code (ResNet-50 + BAM: 25,918,689).
  Their weights start at 0, so the gate starts as the constant σ(0) = 0.5 (F' = 1.5·F) and
  learns from there: the rule the authors' ResNets apply to the final BN of CBAM's spatial gate
  (``model_resnet.py``), applied to the two BNs the paper adds and the released code lacks.
  With weight 1, BN's unit-variance output makes the untrained gate a random per-image scaling
  of the features, which slows training and widens the spread between seeds.
- ``combine="product"`` is the authors' released code exactly: x · (1 + σ(M_c · M_s)), without
  those two BNs (ResNet-50 + BAM: 25,915,099); their checkpoints need it.

Pooling is a plain spatial mean, so non-square maps work.
"""
from __future__ import annotations

import torch
from torch import nn

from ._base import AttentionLayer
from ._checks import check_choice, check_feature_map, check_positive_int, check_reduction


OFFICIAL_BAM_NEEDS_PRODUCT = (
    "load_checkpoint: this is an official BAM checkpoint, whose code computes x·(1 + σ(Mc·Ms)); the model uses "
    "combine='sum' (the paper's σ(Mc + Ms)). Build it with attn_kwargs=dict(combine=\"product\") (or "
    "BAM(..., combine=\"product\")) to reproduce the authors' network")


class BAMChannelGate(nn.Module):
    """M_c: global average pool → Linear(C, C/r) → BN → ReLU → Linear(C/r, C) (→ BN, the paper's
    eq. 2, when ``out_norm``); returns (B, C)."""

    def __init__(self, channels: int, hidden: int, out_norm: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)
        self.out_bn: nn.BatchNorm1d | nn.Identity = nn.BatchNorm1d(channels) if out_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_bn(self.fc2(self.act(self.bn(self.fc1(x.mean((2, 3)))))))


class BAMSpatialGate(nn.Module):
    """M_s: 1×1 reduce → ``num_dilated`` 3×3 convs of dilation d → 1×1 to one channel (→ BN, the
    paper's eq. 3, when ``out_norm``); returns (B, 1, H, W)."""

    def __init__(self, channels: int, hidden: int, dilation: int, num_dilated: int, out_norm: bool = True):
        super().__init__()
        layers = [nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
        for _ in range(num_dilated):
            layers += [nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
                       nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(hidden, 1, 1))
        self.body = nn.Sequential(*layers)
        self.out_bn: nn.BatchNorm2d | nn.Identity = nn.BatchNorm2d(1) if out_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_bn(self.body(x))


class BAM(AttentionLayer):
    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4, num_dilated: int = 2,
                 combine: str = "sum"):
        super().__init__()
        hidden = check_reduction("BAM", channels, reduction)
        check_positive_int("BAM", "dilation", dilation)
        if isinstance(num_dilated, bool) or not isinstance(num_dilated, int) or num_dilated < 0:
            raise ValueError(f"BAM: num_dilated must be a non-negative integer, got {num_dilated!r}")
        check_choice("BAM", "combine", combine, ("sum", "product"))
        self.channels = channels
        self.combine = combine
        paper = combine == "sum"
        self.channel = BAMChannelGate(channels, hidden, out_norm=paper)
        self.spatial = BAMSpatialGate(channels, hidden, dilation, num_dilated, out_norm=paper)
        for bn in self.gate_norms():
            nn.init.zeros_(bn.weight)

    def gate_norms(self) -> list[nn.BatchNorm1d | nn.BatchNorm2d]:
        """The BNs that end each branch in the paper's form (none in the product form); their weights
        start at 0 so that the gate starts as σ(0) = 0.5."""
        return [bn for bn in (self.channel.out_bn, self.spatial.out_bn) if not isinstance(bn, nn.Identity)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map("BAM", x, self.channels)
        mc = self.channel(x)[:, :, None, None]   # (B, C, 1, 1)
        ms = self.spatial(x)                      # (B, 1, H, W)
        logits = mc + ms if self.combine == "sum" else mc * ms
        m = torch.sigmoid(logits)                 # (B, C, H, W)
        self._keep(m)
        return x + x * m

    def official_key_rules(self):
        final = len(self.spatial.body) - 1
        return [(r"^channel_att\.gate_c\.gate_c_fc_0\.", "channel.fc1."),
                (r"^channel_att\.gate_c\.gate_c_bn_1\.", "channel.bn."),
                (r"^channel_att\.gate_c\.gate_c_fc_final\.", "channel.fc2."),
                (r"^spatial_att\.gate_s\.gate_s_conv_reduce0\.", "spatial.body.0."),
                (r"^spatial_att\.gate_s\.gate_s_bn_reduce0\.", "spatial.body.1."),
                (r"^spatial_att\.gate_s\.gate_s_conv_di_(\d+)\.", lambda m: f"spatial.body.{3 + 3 * int(m[1])}."),
                (r"^spatial_att\.gate_s\.gate_s_bn_di_(\d+)\.", lambda m: f"spatial.body.{4 + 3 * int(m[1])}."),
                (r"^spatial_att\.gate_s\.gate_s_conv_final\.", f"spatial.body.{final}.")]

    def checkpoint_filter_fn(self, state_dict, model=None):
        if self.combine != "product":
            raise ValueError(OFFICIAL_BAM_NEEDS_PRODUCT)
        return super().checkpoint_filter_fn(state_dict, model)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, combine={self.combine!r}"
