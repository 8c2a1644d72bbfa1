"""CoAtNet (Dai, Liu, Le and Tan, "CoAtNet: Marrying Convolution and Attention for All Data
Sizes", NeurIPS 2021) and the paper's layout study.

Five stages (paper Table 3, Fig. 4):

- S0, stride 2: two 3×3 convs (the first strided, with BN and GELU between them);
- S1, stride 4: MBConv blocks with SE (:class:`attnvision.layers.MBConv`);
- S2, S3, S4, strides 8, 16, 32: each "C" (MBConv) or "T" (relative-attention transformer),
  picked by ``layout``; C-C-T-T is CoAtNet.

The transformer block is pre-norm, with global relative attention
(:class:`attnvision.layers.RelativeAttention2d`, 32-wide heads) and an MLP of ratio 4 with GELU:

    x ← Proj(Pool(x)) + Attention(Pool(Norm(x)))     (first block of a stage, Pool = 2×2 average)
    x ← x + Attention(Norm(x))                        (other blocks)
    x ← x + MLP(Norm(x))

The first block of every stage halves the resolution and widens to the stage's D. Head:
global average pool → LayerNorm → Linear(D4, D4) → tanh → Linear (the reference TensorFlow code,
github.com/google-research/maxvit; the paper's parameter counts include the tanh layer).

``layout="ViT_REL"`` is the paper's ViT baseline with relative attention: a 16×16, stride-16
patch stem to width D3, then L1+L2+L3+L4 transformer blocks of width D3 at 1/16 resolution
(the depth and width CoAtNet gives its stride-16 stage, so the cost is comparable; its
blocks are grouped by L1…L4 so ``features_only`` still gives five maps).
``rel_attn`` selects pre-softmax (the paper's), post-softmax or no relative bias.
Relative tables are sized for ``img_size``; other input sizes interpolate them, and
checkpoints made at another size are resized when loaded.

No published ImageNet weights fit these models, so none are registered (``pretrained=True`` refuses):
the authors released none (google-research/maxvit publishes MaxViT checkpoints only), timm's paper-like
``coatnet_0_224`` … ``coatnet_3_224`` are untrained, and timm's trained ``coatnet_0_rw_224`` /
``coatnet_1_rw_224`` (``sw_in1k``) are another network: coatnet_0_rw has depths (2, 3, 7, 2) against the
paper's (2, 3, 5, 2), both a (32, 64) stem, SiLU MBConvs (the paper: GELU) expanding from the input width,
ReLU SE, no bias on several projections, and no pre-logits Linear + tanh head (timm's ``_rw_coat_cfg``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import torch
from torch import nn

from ..layers import DropPath, Mlp, SelectAdaptivePool2d, drop_path_rates
from ..layers.mbconv import BN_EPS, MBConv, pool2x2
from ..layers.mlp import MapLinear
from ..layers.relative_attention import REL_MODES, RelativeAttention2d, resize_relative_tables
from ._base import (Backbone, check_image, check_init, init_fan_out_trunc_normal, init_normal_002, make_cfg,
                    register_variant)

LAYOUTS = ("C-C-C-C", "C-C-C-T", "C-C-T-T", "C-T-T-T", "ViT_REL")
COATNET_INITS = ("authors", "fan_out")


def _pool_nhwc(x: torch.Tensor) -> torch.Tensor:
    return pool2x2(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class TransformerBlock(nn.Module):
    """Pre-norm relative-attention block on channels-last (B, H, W, C) maps.

    ``input_size`` is the (H, W) the attention sees, i.e. after the block's pooling.
    """

    def __init__(self, dim: int, dim_out: int, input_size, stride: int = 1, *, head_dim: int = 32,
                 rel: str = "pre", mlp_ratio: float = 4.0, drop_path: float = 0.0, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"TransformerBlock: stride must be 1 or 2, got {stride!r}")
        self.stride = stride
        self.shortcut = MapLinear(dim, dim_out) if dim != dim_out else nn.Identity()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = RelativeAttention2d(dim, input_size, head_dim=head_dim, rel=rel, dim_out=dim_out,
                                        attn_drop=attn_drop, proj_drop=proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim_out)
        self.mlp = Mlp(dim_out, int(dim_out * mlp_ratio), act_layer=nn.GELU, drop=proj_drop, linear_layer=MapLinear)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut, x = x, self.norm1(x)
        if self.stride == 2:
            shortcut, x = _pool_nhwc(shortcut), _pool_nhwc(x)              # (B, H/2, W/2, C)
        x = self.shortcut(shortcut) + self.drop_path1(self.attn.forward_tokens(x))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class Stage(nn.Module):
    """A run of blocks; transformer stages work channels-last inside and take and give NCHW maps."""

    def __init__(self, blocks: list[nn.Module], nhwc: bool):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.nhwc = nhwc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.nhwc:
            return self.blocks(x)
        return self.blocks(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvStem(nn.Module):
    """S0: 3×3 conv, stride 2 → BN → GELU → 3×3 conv."""

    def __init__(self, in_chans: int, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, 3, stride=2, padding=1)
        self.norm1 = nn.BatchNorm2d(width, eps=BN_EPS)
        self.act1 = nn.GELU()
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return self.conv2(self.act1(self.norm1(self.conv1(x))))


class ClassifierHead(nn.Module):
    """Global pool (average by default) → LayerNorm → Linear → tanh (pre-logits) → dropout → Linear.

    With ``global_pool=''`` (no pooling) the head returns the map: its norm and pre-logits layer read
    pooled features."""

    def __init__(self, dim: int, hidden: int, num_classes: int, drop_rate: float = 0.0,
                 global_pool: SelectAdaptivePool2d | None = None):
        super().__init__()
        self.global_pool = SelectAdaptivePool2d() if global_pool is None else global_pool
        width = dim * self.global_pool.feat_mult()
        self.norm, self.pre_logits = self.pooled_layers(width, hidden)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(hidden or width, num_classes) if num_classes > 0 else nn.Identity()

    @staticmethod
    def pooled_layers(width: int, hidden: int, device=None, dtype=None) -> tuple[nn.Module, nn.Module]:
        """The LayerNorm and the tanh pre-logits layer (none when ``hidden`` is 0) for ``width`` pooled features."""
        pre = (nn.Sequential(nn.Linear(width, hidden, device=device, dtype=dtype), nn.Tanh()) if hidden
               else nn.Identity())
        return nn.LayerNorm(width, device=device, dtype=dtype), pre

    def forward(self, x, pre_logits: bool = False):
        x = self.global_pool(x)
        if self.global_pool.is_identity():
            return x  # (B, C, H, W)
        x = self.pre_logits(self.norm(x))
        return x if pre_logits else self.fc(self.drop(x))


@dataclass(frozen=True)
class CoAtNetCfg:
    """One CoAtNet size: blocks per stage L1…L4 (S0 is always two convs), widths D0…D4 and the width
    of an attention head."""

    depths: tuple[int, ...]
    dims: tuple[int, ...]
    cfg: dict = field(default_factory=dict)
    head_dim: int = 32


def _ceil_half(size: tuple[int, int]) -> tuple[int, int]:
    return -(-size[0] // 2), -(-size[1] // 2)


class CoAtNet(Backbone):
    """A config-driven CoAtNet.

    Args:
        cfg: the size (depths, widths).
        num_classes, in_chans: head outputs and input channels.
        layout: "C-C-T-T" (default), "C-C-C-C", "C-C-C-T", "C-T-T-T" (S1…S4) or "ViT_REL".
        rel_attn: "pre" (relative attention), "post" or "none".
        img_size: input size (int or (H, W)) the relative tables are made for; other sizes run too.
        head_dim: width of an attention head (default: the size's, ``cfg.head_dim``).
        mlp_ratio, expand_ratio, se_ratio: block widths.
        stride_in_1x1: MBConvs stride their expansion conv (the paper's equation) instead of
            the depth-wise conv (the reference code).
        head_hidden_size: width of the tanh pre-logits layer (default D4; 0 removes it).
        drop_rate: dropout before the classifier; drop_path_rate: stochastic depth, linear in depth.
        global_pool: the head's pooling (see :class:`~attnvision.layers.SelectAdaptivePool2d`; "avg" by
            default); "catavgmax" doubles the width the norm and pre-logits layer read.
        channels_last: run on channels-last memory (the same maps, computed faster: the
            convolutions use their NHWC kernels and the transformer stages need no transposes).
        init: "authors" (default): the reference code's, every kernel N(0, 0.02) and every bias 0
            (:func:`~attnvision.models._base.init_normal_002`); "fan_out": He-normal fan-out convolutions
            and truncated-normal (0.02) linear layers (:func:`~attnvision.models._base.init_fan_out_trunc_normal`).
    """

    classifier_path = "head.fc"

    def __init__(self, cfg: CoAtNetCfg, num_classes: int = 1000, in_chans: int = 3, *, layout: str = "C-C-T-T",
                 rel_attn: str = "pre", img_size=224, head_dim: int | None = None, mlp_ratio: float = 4.0,
                 expand_ratio: float = 4.0, se_ratio: float = 0.25, stride_in_1x1: bool = False,
                 head_hidden_size: int | None = None, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 attn_drop: float = 0.0, channels_last: bool = True, init: str = "authors", global_pool: str = "avg"):
        super().__init__()
        check_init("CoAtNet", init, COATNET_INITS)
        if layout not in LAYOUTS:
            raise ValueError(f"CoAtNet: layout must be one of {LAYOUTS}, got {layout!r}")
        if rel_attn not in REL_MODES:
            raise ValueError(f"CoAtNet: rel_attn must be one of {REL_MODES}, got {rel_attn!r}")
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if len(img_size) != 2 or not all(isinstance(s, int) and s > 0 for s in img_size):
            raise ValueError(f"CoAtNet: img_size must be a positive int or (H, W), got {img_size!r}")
        self.cfg, self.layout, self.rel_attn, self.img_size = cfg, layout, rel_attn, img_size
        self.in_chans, self.num_classes, self.channels_last = in_chans, num_classes, channels_last
        d0, *dims = cfg.dims
        vit = layout == "ViT_REL"
        dpr = iter(drop_path_rates(drop_path_rate, sum(cfg.depths)))
        t_kw: dict[str, Any] = dict(head_dim=cfg.head_dim if head_dim is None else head_dim, rel=rel_attn,
                                    mlp_ratio=mlp_ratio, attn_drop=attn_drop)

        if vit:
            width = dims[2]
            self.stem: nn.Module = nn.Conv2d(in_chans, width, 16, stride=16)
            size = (img_size[0] // 16, img_size[1] // 16)
            reduction, cin = 16, width
        else:
            self.stem = ConvStem(in_chans, d0)
            size, reduction, cin = _ceil_half(img_size), 2, d0
        info = [dict(num_chs=cin, reduction=reduction, module="stem")]

        stages = []
        kinds = ["T"] * 4 if vit else layout.split("-")
        for i, (depth, kind) in enumerate(zip(cfg.depths, kinds)):
            cout = cin if vit else dims[i]
            stride = 1 if vit else 2
            if stride == 2:
                size, reduction = _ceil_half(size), reduction * 2
            blocks: list[nn.Module] = []
            for j in range(depth):
                s = stride if j == 0 else 1
                if kind == "C":
                    blocks.append(MBConv(cin, cout, s, expand_ratio, se_ratio, drop_path=next(dpr),
                                         stride_in_1x1=stride_in_1x1))
                else:
                    blocks.append(TransformerBlock(cin, cout, size, s, drop_path=next(dpr), **t_kw))
                cin = cout
            stages.append(Stage(blocks, nhwc=kind == "T"))
            info.append(dict(num_chs=cout, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.ModuleList(stages)
        self.feature_info = info
        hidden = cin if head_hidden_size is None else head_hidden_size
        self.num_features = hidden or cin
        self.head = ClassifierHead(cin, hidden, num_classes, drop_rate, self.make_pool(global_pool, num_classes))
        self.pretrained_cfg = dict(cfg.cfg, input_size=(in_chans, *img_size))
        if init == "authors":
            init_normal_002(self)
        else:
            self.apply(init_fan_out_trunc_normal)

    def forward_stem(self, x):
        check_image(type(self).__name__, x, self.in_chans)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.stem(x)

    def _stage_outputs(self, x):
        x = self.forward_stem(x)
        yield x  # feature 0 is the stem (S0)
        for stage in self.stages:
            x = self._run(stage, x)
            yield x

    def group_matcher(self, coarse: bool = False) -> dict:
        """S0 (the stem), then each block of S1…S4 (each stage when ``coarse``), then the head (timm's
        ``MaxxVit.group_matcher``)."""
        return dict(stem=r"^stem\.", blocks=r"^stages\.(\d+)\." if coarse else r"^stages\.(\d+)\.blocks\.(\d+)\.")

    def _keep_stages(self, n):
        self.stages = self.stages[:n - 1]

    def _drop_head(self):
        self.head.norm, self.head.pre_logits = nn.Identity(), nn.Identity()
        super()._drop_head()

    def forward_features(self, x):
        x = self.forward_stem(x)
        for stage in self.stages:
            x = self._run(stage, x)
        return x

    def forward_head(self, x, pre_logits: bool = False):
        return self.head(x, pre_logits=pre_logits)

    @property
    def pool_type(self) -> str:
        return self.head.global_pool.pool_type

    def _set_global_pool(self, global_pool: str, num_classes: int) -> None:
        """A pooling of another width gets a fresh norm and pre-logits layer (PyTorch's initialisation)."""
        pool = self.make_pool(global_pool, num_classes)
        if pool.feat_mult() != self.head.global_pool.feat_mult() and not isinstance(self.head.norm, nn.Identity):
            pre = self.head.pre_logits
            hidden = cast(nn.Linear, pre[0]).out_features if isinstance(pre, nn.Sequential) else 0
            self.head.norm, self.head.pre_logits = ClassifierHead.pooled_layers(
                self.feature_info[-1]["num_chs"] * pool.feat_mult(), hidden, self.head.norm.weight.device,
                self.head.norm.weight.dtype)
        self.head.global_pool = pool

    @property
    def head_hidden_size(self) -> int:
        """The tanh layer's width, or the pooled width when there is none."""
        mult = 1 if isinstance(self.head.pre_logits, nn.Sequential) else self.head.global_pool.feat_mult()
        return self.num_features * mult

    def adapt_state_dict(self, state_dict: dict) -> dict:
        """Resize the relative bias tables of a checkpoint made at another ``img_size``."""
        return resize_relative_tables(state_dict, self)


# -- variants ---------------------------------------------------------------------------------

_PAPER = "Dai et al., CoAtNet: Marrying Convolution and Attention for All Data Sizes, NeurIPS 2021"
_M, _G = 1e6, 1e9

# Paper Table 3 (L, D) and Table 4 (parameters; FLOPs at 224 and at 384, ImageNet-1K rows;
# CoAtNet-4 appears only at 384 and 512, pre-trained on ImageNet-21K). CoAtNet-5 is one of the paper's
# JFT models (its Table 5: 688 M parameters, 812 G FLOPs at 512): L and D as its table gives them,
# with 64-wide attention heads (32-wide heads give 691.2 M parameters at 512, 64-wide ones 688.9 M).
# CoAtNet-2's D4 is 1024 where Table 3 prints 1026: 1026 does not split into 32-wide heads, and
# 1024 = 2·D3 follows the other sizes and timm's coatnet_2 (74,684,744 parameters at 1000 classes).
COATNET_CFGS: dict[str, CoAtNetCfg] = {
    "coatnet_0": CoAtNetCfg((2, 3, 5, 2), (64, 96, 192, 384, 768),
                            dict(paper_params=25 * _M, paper_macs=4.2 * _G, paper_macs_384=13.4 * _G)),
    "coatnet_1": CoAtNetCfg((2, 6, 14, 2), (64, 96, 192, 384, 768),
                            dict(paper_params=42 * _M, paper_macs=8.4 * _G, paper_macs_384=27.4 * _G)),
    "coatnet_2": CoAtNetCfg((2, 6, 14, 2), (128, 128, 256, 512, 1024),
                            dict(paper_params=75 * _M, paper_macs=15.7 * _G, paper_macs_384=49.8 * _G)),
    "coatnet_3": CoAtNetCfg((2, 6, 14, 2), (192, 192, 384, 768, 1536),
                            dict(paper_params=168 * _M, paper_macs=34.7 * _G, paper_macs_384=107.4 * _G)),
    "coatnet_4": CoAtNetCfg((2, 12, 28, 2), (192, 192, 384, 768, 1536),
                            dict(paper_params=275 * _M, paper_macs=None, paper_macs_384=189.5 * _G)),
    "coatnet_5": CoAtNetCfg((2, 12, 28, 2), (192, 256, 512, 1280, 2048),
                            dict(paper_params=688 * _M, paper_macs=None, paper_macs_384=None,
                                 paper_macs_512=812 * _G), head_dim=64),
}


def _build(num_classes, in_chans, *, name, **kwargs):
    base = COATNET_CFGS[name]
    cfg = CoAtNetCfg(base.depths, base.dims, make_cfg(paper=_PAPER, **base.cfg), base.head_dim)
    return CoAtNet(cfg, num_classes, in_chans, **kwargs)


for _name in COATNET_CFGS:
    register_variant(_name, partial(_build, name=_name),
                     f"{_name.replace('_', '-').replace('coatnet', 'CoAtNet')}; kwargs layout=, rel_attn=, img_size=.")
