"""Attention-augmented ResNets (Bello et al., ICCV 2019) and their evolving-attention versions
(Wang et al., "Evolving Attention with Residual Convolutions", ICML 2021).

``aa_resnet34/50/101``: the ResNet of :mod:`attnvision.models.resnet` whose 3×3 convolutions in
the last three stages (28×28, 14×14 and 7×7 at 224×224) are :class:`~attnvision.layers.AAConv2d`
(the bottleneck's 3×3 conv; both 3×3 convs of a basic block). Defaults as the paper (Bello et al.
Sec. 4.1, Table 2): κ = dk/F_out = 0.2, υ = dv/F_out = 0.1 (κ = 2υ = 0.2), 8 heads, 2-D relative
logits; in the first augmented stage the attention input is pooled by 2 and its output resized
back (the authors' memory saving, ``attn_downsample_stages``).

κ·F_out and υ·F_out need not split into the heads (0.2 · 128 = 25.6, where the authors' code
takes ``int(filters * k)`` = 25 and fails to split 25 channels into 8 heads): dk and dv are
rounded to the nearest multiple of ``heads`` (halves up), and are at least ``heads``
(:func:`depth_for_heads`). The bottleneck networks (``aa_resnet50/101/152``) also keep "a minimum of
20 dimensions per head for the keys" (``min_dk_per_head=20``, the paper's CIFAR setting): dk = 160
and dv = 16, 24 and 48 in stages 2–4. That is what the paper's Table 2 counts: 25,782,256,
45,365,848 and 61,566,848 parameters against its 25.8 M, 45.4 M and 61.6 M (without the minimum,
dk = 24, 48 and 104 and the counts fall 2.7–4.2% short). ``aa_resnet34`` matches its 20.7 M without
it (+1.3%; with it +7.4%), so its default is ``min_dk_per_head=1``.

``aa_resnet152`` is built the same way; ``aa_wide_resnet28_10`` is the paper's CIFAR-100 network
(Sec. 4.1): the pre-activation Wide-ResNet-28-10 of :mod:`attnvision.models.resnet` with the first
3×3 conv of every residual block (all three stages, 32×32 to 8×8) augmented, 8 heads, κ = 2υ = 0.2
and "a minimum of 20 dimensions per head for the keys" (``min_dk_per_head=20``: dk = 160, 160, 160
and dv = 16, 32, 64 in the three stages), no pooled attention input.

``ea_aa_resnet34/50/101/152``: the same, with the attention logits chained across consecutive AA
layers whose attention maps have the same size (α = 0.5, β = 1.0, ReLU, 3×3 conv on the heads'
logit image) and the evolving-attention authors' depths κ = 0.25, υ = 0.125
(pkuyym/EvolvingAttention ``EAResnet50/official/resnet/resnet_model.py``,
``_bottleneck_asblock_v1``). A layer that starts a chain (the first one, or one after a change
of map size) has no convolution, as in the authors' code; every other one adds
heads·heads·9 + heads parameters (584 for 8 heads). With the pooled first stage the chain runs unbroken through
stages 2 and 3 (both 14×14 at 224×224) and restarts at stage 4.

``collect_attention(model, x)`` (``attnvision.layers``) returns every AA layer's map in order.
"""
from __future__ import annotations

import math
from dataclasses import replace
from functools import partial
from typing import Any

import torch

from ..layers import AAConv2d
from ..layers.evolving_attention import check_weight
from ._base import CIFAR_MEAN, CIFAR_STD, init_tf_resnet, init_torchvision_cnn, make_cfg, register_variant
from .resnet import RESNET_CFGS, BasicBlock, Bottleneck, PreActBasicBlock, ResNet

_PAPER_AA = "Bello et al., Attention Augmented Convolutional Networks, ICCV 2019"
_PAPER_EA = "Wang et al., Evolving Attention with Residual Convolutions, ICML 2021"


def depth_for_heads(depth: float, heads: int) -> int:
    """κ·F_out or υ·F_out as a key/value depth: the nearest multiple of ``heads`` (halves up), at least
    ``heads``."""
    return max(heads, math.floor(depth / heads + 0.5) * heads)


def _half(n: int) -> int:
    return (n - 1) // 2 + 1  # a 3×3 (or 7×7) stride-2 conv or pool with "same" padding


def _run(conv: AAConv2d, role: str, x: torch.Tensor, prev_logits):
    if role == "evolve":
        return conv(x, prev_logits)
    if role == "start":
        return conv(x, return_logits=True)
    return conv(x), None


class AABasicBlock(BasicBlock):
    """BasicBlock with both 3×3 convs attention-augmented: ``forward(x, prev_logits) -> (x, logits)``."""

    def __init__(self, *args, aa_convs, roles, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv1, self.conv2 = aa_convs
        self.roles = roles

    def forward(self, x, prev_logits=None):
        shortcut = x if self.downsample is None else self.downsample(x)
        out, logits = _run(self.conv1, self.roles[0], x, prev_logits)
        out = self.relu(self.bn1(out))
        out, logits = _run(self.conv2, self.roles[1], out, logits)
        out = self.attn(self.bn2(out))
        return self.relu(self.drop_path(out) + shortcut), logits


class AABottleneck(Bottleneck):
    """Bottleneck with its 3×3 conv attention-augmented: ``forward(x, prev_logits) -> (x, logits)``."""

    def __init__(self, *args, aa_convs, roles, **kwargs):
        super().__init__(*args, **kwargs)
        (self.conv2,) = aa_convs
        self.roles = roles

    def forward(self, x, prev_logits=None):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out, logits = _run(self.conv2, self.roles[0], out, prev_logits)
        out = self.relu(self.bn2(out))
        out = self.attn(self.bn3(self.conv3(out)))
        return self.relu(self.drop_path(out) + shortcut), logits


class AAPreActBlock(PreActBasicBlock):
    """Pre-activation block with its first 3×3 conv attention-augmented (the paper's AA-Wide-ResNet):
    ``forward(x, prev_logits) -> (x, logits)``."""

    def __init__(self, *args, aa_convs, roles, **kwargs):
        super().__init__(*args, **kwargs)
        (self.conv1,) = aa_convs
        self.roles = roles

    def forward(self, x, prev_logits=None):
        pre = self.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(pre)
        out, logits = _run(self.conv1, self.roles[0], pre, prev_logits)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))
        return self.drop_path(self.attn(out)) + shortcut, logits


_AA_BLOCKS: dict[type, type[torch.nn.Module]] = {BasicBlock: AABasicBlock, Bottleneck: AABottleneck,
                                                  PreActBasicBlock: AAPreActBlock}


class AAResNet(ResNet):
    """A ResNet with attention-augmented 3×3 convs (see the module docstring).

    Args:
        cfg, num_classes, in_chans, **kwargs: as :class:`~attnvision.models.resnet.ResNet`.
        kappa, upsilon: dk and dv as fractions of each conv's output channels, rounded to multiples of
            ``heads`` (:func:`depth_for_heads`). heads: attention heads.
        min_dk_per_head: the smallest key depth per head (dk is at least ``min_dk_per_head · heads``).
        pos_encoding: the AA layers' position encoding, "relative" (default), "sine", "coord" or "none"
            (:class:`~attnvision.layers.AAConv2d`; the paper's ablation). img_size: the input size the
            relative tables are made for (smaller inputs work; larger ones need a model built for them).
        aa_stages: 0-based stages whose 3×3 convs are augmented.
        attn_downsample_stages: stages whose attention input is pooled by 2.
        evolve, alpha, beta, attn_kernel_size, activation: the evolving chain (``ea_*`` models).
        init: "authors" (default): the TensorFlow ResNet the evolving-attention authors augment
            (:func:`~attnvision.models._base.init_tf_resnet`: variance scaling on fan-in for every
            convolution, zero biases, a Glorot-uniform classifier); "torchvision": He-normal fan-out
            for every convolution, the AA layers' included.
    """

    def __init__(self, cfg, num_classes: int = 1000, in_chans: int = 3, *, kappa: float = 0.2,
                 upsilon: float = 0.1, heads: int = 8, min_dk_per_head: int = 1, pos_encoding: str = "relative",
                 img_size=224, aa_stages=(1, 2, 3), attn_downsample_stages=(1,), evolve: bool = False,
                 alpha: float = 0.5, beta: float = 1.0, attn_kernel_size: int = 3, activation: str = "relu", **kwargs):
        for arg, value in (("kappa", kappa), ("upsilon", upsilon)):
            if check_weight("AAResNet", arg, value) == 0.0:
                raise ValueError(f"AAResNet: {arg} must be in (0, 1], got {value!r}")
        if kwargs.get("stride_in_1x1"):
            raise ValueError("AAResNet: the attention takes the stride (by pooling); stride_in_1x1 is not supported")
        stages = range(len(cfg.layers))
        for arg, value in (("aa_stages", aa_stages), ("attn_downsample_stages", attn_downsample_stages)):
            if not all(isinstance(i, int) and i in stages for i in value):
                raise ValueError(f"AAResNet: {arg} must be stage indices in 0..{len(cfg.layers) - 1}, got {value!r}")
        if isinstance(min_dk_per_head, bool) or not isinstance(min_dk_per_head, int) or min_dk_per_head < 1:
            raise ValueError(f"AAResNet: min_dk_per_head must be a positive integer, got {min_dk_per_head!r}")
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        cifar_stem = (kwargs.get("stem") or cfg.stem) == "cifar"
        size = (h, w) if cifar_stem else (_half(_half(h)), _half(_half(w)))  # after the stem
        state: dict[str, Any] = dict(size=size, last_attn=None)

        def make_block(stage, index, block_cls, cin, planes, stride, downsample, **block_kw):
            if stage not in aa_stages:
                if index == 0 and stage > 0:
                    state["size"] = tuple(_half(n) for n in state["size"])
                return block_cls(cin, planes, stride, downsample, **block_kw)
            width = int(planes * block_kw.get("base_width", 64) / 64) * block_kw.get("groups", 1)
            specs = {BasicBlock: [(cin, planes, stride), (planes, planes, 1)],
                     PreActBasicBlock: [(cin, planes, stride)]}.get(block_cls, [(width, width, stride)])
            convs, roles = [], []
            for c_in, c_out, s in specs:
                down = stage in attn_downsample_stages
                attn_size = tuple(_half(n) if s > 1 else n for n in state["size"])
                if down:
                    attn_size = tuple(_half(n) for n in attn_size)
                role = "none"
                if evolve:
                    role = "evolve" if state["last_attn"] == attn_size else "start"
                state["last_attn"] = attn_size
                dk = max(depth_for_heads(kappa * c_out, heads), min_dk_per_head * heads)
                convs.append(AAConv2d(c_in, c_out, 3, dk=dk,
                                      dv=depth_for_heads(upsilon * c_out, heads), heads=heads,
                                      pos_encoding=pos_encoding, stride=s, input_size=state["size"], downsample=down,
                                      evolve=role == "evolve", alpha=alpha, beta=beta,
                                      attn_kernel_size=attn_kernel_size, activation=activation))
                if s > 1:
                    state["size"] = tuple(_half(n) for n in state["size"])
                roles.append(role)
            return _AA_BLOCKS[block_cls](cin, planes, stride, downsample, aa_convs=convs, roles=tuple(roles),
                                         **block_kw)

        super().__init__(cfg, num_classes, in_chans, make_block=make_block, **kwargs)
        self.evolve = evolve

    def init_weights(self, init: str = "authors") -> None:
        """(Re)initialise every parameter by ``init`` (see the class docstring)."""
        if init == "authors":
            init_tf_resnet(self, self.fc)
        else:
            init_torchvision_cnn(self)

    def _run_stage(self, stage, x, logits):
        for block in stage:
            if isinstance(block, (AABasicBlock, AABottleneck, AAPreActBlock)):
                x, logits = block(x, logits)
            else:
                x = block(x)
        return x, logits

    def _stage_outputs(self, x):
        x, logits = self.forward_stem(x), None
        for stage, attn in zip(self.stages, self.stage_attn):
            x, logits = self._run(self._run_stage, stage, x, logits)
            x = attn(x)
            yield x

    def forward_features(self, x):
        x, logits = self.forward_stem(x), None
        for stage, attn in zip(self.stages, self.stage_attn):
            x, logits = self._run(self._run_stage, stage, x, logits)
            x = attn(x)
        return self.final_norm(x)

    @staticmethod
    def checkpoint_filter_fn(state_dict, model):
        raise ValueError("load_checkpoint: no official PyTorch checkpoints exist for attention-augmented ResNets "
                         "(the authors' code is TensorFlow); use source='attnvision'")


# The papers' reported parameters: Bello et al. Table 2 (ImageNet, 1000 classes, 224×224, κ = 2υ = 0.2;
# AA-ResNet-34 20.7 M, AA-ResNet-50 25.8 M, AA-ResNet-101 45.4 M, AA-ResNet-152 61.6 M) and Table 1
# (CIFAR-100, 100 classes, 32×32: AA-Wide-ResNet 36.2 M).
PAPER_PARAMS = {"aa_resnet34": 20.7e6, "aa_resnet50": 25.8e6, "aa_resnet101": 45.4e6, "aa_resnet152": 61.6e6,
                "aa_wide_resnet28_10": 36.2e6}
_CIFAR100: dict[str, Any] = dict(input_size=(3, 32, 32), mean=CIFAR_MEAN, std=CIFAR_STD, crop_pct=1.0, num_classes=100)
# The paper's CIFAR-100 setting (Sec. 4.1): every block's first conv in all three stages, 20-wide key heads.
_CIFAR_AA = dict(aa_stages=(0, 1, 2), attn_downsample_stages=(), min_dk_per_head=20, img_size=32)


def _build(num_classes, in_chans, *, base, evolve, **kwargs):
    if evolve:  # the evolving-attention authors' depths
        kwargs = dict(dict(kappa=0.25, upsilon=0.125), **kwargs)
    cifar = RESNET_CFGS[base].stem == "cifar"
    if cifar:
        kwargs = dict(_CIFAR_AA, **kwargs)
    elif not evolve and RESNET_CFGS[base].block == "bottleneck":  # keys 20 wide a head, as Table 2 counts
        kwargs = dict(dict(min_dk_per_head=20), **kwargs)
    paper = _PAPER_AA + (f"; {_PAPER_EA}" if evolve else "")
    name = f"{'ea_' if evolve else ''}aa_{base}"
    cfg = replace(RESNET_CFGS[base], cfg=make_cfg(paper=paper, paper_params=PAPER_PARAMS.get(name), paper_macs=None,
                                                  **(_CIFAR100 if cifar else {})))
    return AAResNet(cfg, num_classes, in_chans, evolve=evolve, **kwargs)


for _base in ("resnet34", "resnet50", "resnet101", "resnet152"):
    register_variant(f"aa_{_base}", partial(_build, base=_base, evolve=False),
                     f"Attention-augmented {_base} (Bello et al., 2019).")
    register_variant(f"ea_aa_{_base}", partial(_build, base=_base, evolve=True),
                     f"Attention-augmented {_base} with evolving attention (Wang et al., 2021).")
register_variant("aa_wide_resnet28_10", partial(_build, base="wide_resnet28_10", evolve=False),
                 "Attention-augmented Wide-ResNet-28-10 for CIFAR-100 (Bello et al., 2019, Sec. 4.1).")
