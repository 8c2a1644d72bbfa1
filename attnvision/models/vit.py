"""Vision transformers (Dosovitskiy et al., ICLR 2021) in the DeiT configurations (Touvron et al.,
ICML 2021), plain and with evolving attention (Wang et al., ICML 2021).

    z_0 = [x_cls; x_p^1 E; …; x_p^N E] + E_pos
    z'_l = z_{l−1} + MSA(LN(z_{l−1})),   z_l = z'_l + MLP(LN(z'_l))
    y = LN(z_L^0) W_head

``vit_tiny`` / ``vit_small``: DeiT-Ti / DeiT-S (patch 16, width 192 / 384, depth 12, 3 / 6 heads,
MLP ratio 4, LayerNorm eps 1e-6, class token). ``ea_vit_tiny`` / ``ea_vit_small``: the first
block's attention starts the evolving chain, every later block's attention is
:class:`~attnvision.layers.EvolvingAttention` on its predecessor's logits (α = 0.5, β = 1.0,
3×3 conv, ReLU; all tokens, the class token included, form the N×N logit image).

Module names are timm's (``patch_embed.proj``, ``blocks.i.attn.qkv``, ``blocks.i.mlp.fc1``,
``norm``, ``head``), so timm's and DeiT's ViT weights load as they are. The learned position
embedding is made for ``img_size``; other input sizes are an error unless the model is built with
``dynamic_img_size=True``: then any multiple of the patch size runs, with the position embedding
resampled bicubically to the input's patch grid (timm's ``resample_abs_pos_embed``; the class
token's embedding is kept), and ``pretrained_cfg["fixed_input_size"]`` is False.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import EvolvingBlock, drop_path_rates
from ..layers._checks import check_choice, is_tracing
from ._base import MATCH_PREV, Backbone, check_image, make_cfg, register_variant

_PAPER_VIT = "Touvron et al., Training data-efficient image transformers & distillation through attention, ICML 2021"
_PAPER_EA = "Wang et al., Evolving Attention with Residual Convolutions, ICML 2021"


@dataclass(frozen=True)
class ViTCfg:
    dim: int
    depth: int
    heads: int
    patch_size: int = 16
    mlp_ratio: float = 4.0
    cfg: dict = field(default_factory=dict)


class PatchEmbed(nn.Module):
    """Non-overlapping p×p patches → linear embedding: (B, C, H, W) → (B, N, dim)."""

    def __init__(self, in_chans: int, dim: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, dim)


class VisionTransformer(Backbone):
    """A ViT with a class token (see the module docstring).

    Args:
        cfg: width, depth, heads, patch size. img_size: the input size the position embedding is for.
        evolve, alpha, beta, kernel_size, activation: the evolving chain (``ea_vit_*``).
        drop_rate, attn_drop_rate, drop_path_rate: dropouts and stochastic depth. init_values: LayerScale.
        global_pool: "token" (default: the class token) or "avg" (the mean of the patch tokens), both
            after the final norm. dynamic_img_size: take other input sizes (see the module docstring).
    """

    classifier_path = "head"
    pool_types = ("token", "avg")
    global_pool: str  # the pool_types option itself, as timm's ViTs keep it

    def __init__(self, cfg: ViTCfg, num_classes: int = 1000, in_chans: int = 3, *, img_size=224,
                 evolve: bool = False, alpha: float = 0.5, beta: float = 1.0, kernel_size: int = 3,
                 activation: str = "relu", drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, init_values: float | None = None, qkv_bias: bool = True,
                 global_pool: str = "token", dynamic_img_size: bool = False):
        super().__init__()
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if h % cfg.patch_size or w % cfg.patch_size:
            raise ValueError(f"VisionTransformer: img_size must be a multiple of the patch size {cfg.patch_size}, "
                             f"got {(h, w)}")
        self.cfg, self.in_chans, self.num_classes, self.evolve = cfg, in_chans, num_classes, evolve
        self.img_size, self.grid = (h, w), (h // cfg.patch_size, w // cfg.patch_size)
        self.drop_rate, self.dynamic_img_size = drop_rate, bool(dynamic_img_size)
        self._set_global_pool(global_pool, num_classes)
        self.patch_embed = PatchEmbed(in_chans, cfg.dim, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], cfg.dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = drop_path_rates(drop_path_rate, cfg.depth)
        chain = (lambda i: "start" if i == 0 else "evolve") if evolve else (lambda i: "none")
        self.blocks = nn.ModuleList(
            EvolvingBlock(cfg.dim, cfg.heads, cfg.mlp_ratio, chain=chain(i), qkv_bias=qkv_bias, drop=drop_rate,
                          attn_drop=attn_drop_rate, drop_path=dpr[i], init_values=init_values,
                          norm_layer=partial(nn.LayerNorm, eps=1e-6), alpha=alpha, beta=beta,
                          kernel_size=kernel_size, activation=activation)
            for i in range(cfg.depth))
        self.norm: nn.Module = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, num_classes) if num_classes > 0 else nn.Identity()
        self.num_features = cfg.dim
        self.feature_info = [dict(num_chs=cfg.dim, reduction=cfg.patch_size, module=f"blocks.{i}")
                             for i in range(cfg.depth)]
        self.pretrained_cfg = dict(cfg.cfg, fixed_input_size=not self.dynamic_img_size)
        self._init_weights()

    def _init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _check_size(self, x):
        if is_tracing():
            return
        p = self.cfg.patch_size
        if self.dynamic_img_size:
            if x.shape[-2] % p or x.shape[-1] % p:
                raise ValueError(f"VisionTransformer: dynamic_img_size takes inputs whose sides are multiples of the "
                                 f"patch size {p}, got {x.shape[-2]}×{x.shape[-1]}")
        elif tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"VisionTransformer: built for {self.img_size[0]}×{self.img_size[1]} inputs, got "
                             f"{x.shape[-2]}×{x.shape[-1]}; build it with img_size={tuple(x.shape[-2:])} "
                             f"or dynamic_img_size=True")

    def _grid(self, x) -> tuple[int, int]:
        """The patch grid of input ``x``."""
        if not self.dynamic_img_size:
            return self.grid
        return x.shape[-2] // self.cfg.patch_size, x.shape[-1] // self.cfg.patch_size

    def position_embedding(self, grid) -> torch.Tensor:
        """(1, 1 + gh·gw, dim): the learned embedding, resampled to ``grid`` when it is not the built one
        (timm's ``resample_abs_pos_embed``: bicubic, antialiased, in float32; the class token's kept)."""
        if not is_tracing() and tuple(grid) == self.grid:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = patch_pos.float().reshape(1, *self.grid, -1).permute(0, 3, 1, 2)  # (1, dim, gh, gw)
        patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", antialias=True)
        patch_pos = patch_pos.permute(0, 2, 3, 1).flatten(1, 2).to(self.pos_embed.dtype)
        return torch.cat([cls_pos, patch_pos], 1)

    def forward_tokens(self, x):
        check_image(type(self).__name__, x, self.in_chans)
        self._check_size(x)
        pos = self.position_embedding(self._grid(x)) if self.dynamic_img_size else self.pos_embed
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + pos  # (B, 1 + N, dim)
        return self.pos_drop(x)

    def _stage_outputs(self, x):
        grid = self._grid(x)
        x, logits = self.forward_tokens(x), None
        for block in self.blocks:
            x, logits = self._run(block, x, logits)
            yield x, grid  # (B, 1 + N, dim)

    def _feature_map(self, index, state, norm):
        x, (gh, gw) = state
        if norm:  # every block's tokens have the final norm's width (timm's ViT convention)
            x = self.norm(x)
        return x[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, gh, gw)  # (B, dim, H/p, W/p)

    def _final(self, index, state):
        return self._final_norm(state[0])  # every block has the norm's width

    def final_norm_module(self):
        return None if isinstance(self.norm, nn.Identity) else self.norm

    def _drop_final_norm(self):
        self.norm = nn.Identity()

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's ViT grouping (``timm/models/vision_transformer.py``, ``VisionTransformer.group_matcher``):
        the embeddings, then each block, the final norm joining the last one, then the head."""
        return dict(stem=r"^cls_token$|^pos_embed$|^patch_embed\.",
                    blocks=[(r"^blocks\.(\d+)\.", None), (r"^norm\.", (MATCH_PREV,))])

    def _keep_stages(self, n):
        self.blocks = self.blocks[:n]

    def forward_features(self, x):
        x, logits = self.forward_tokens(x), None
        for block in self.blocks:
            x, logits = self._run(block, x, logits)
        return self.norm(x)

    @property
    def pool_type(self) -> str:
        return self.global_pool

    def _set_global_pool(self, global_pool: str, num_classes: int) -> None:
        check_choice(type(self).__name__, "global_pool", global_pool, self.pool_types)
        self.global_pool = global_pool

    @property
    def head_hidden_size(self) -> int:
        return self.num_features

    def forward_head(self, x, pre_logits: bool = False):
        x = x[:, 1:].mean(1) if self.global_pool == "avg" else x[:, 0]  # (B, dim)
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.head(x)


VIT_CFGS = {"vit_tiny": ViTCfg(192, 12, 3), "vit_small": ViTCfg(384, 12, 6)}
# DeiT Table 1: DeiT-Ti 5M, DeiT-S 22M parameters (1000 classes, 224×224); no MACs are given there.
PAPER_NUMBERS = {"vit_tiny": (5e6, None), "vit_small": (22e6, None)}


def _build(num_classes, in_chans, *, base, evolve, **kwargs):
    paper = _PAPER_VIT + (f"; {_PAPER_EA}" if evolve else "")
    params, macs = PAPER_NUMBERS[base] if not evolve else (None, None)
    cfg = VIT_CFGS[base]
    cfg = ViTCfg(cfg.dim, cfg.depth, cfg.heads, cfg.patch_size, cfg.mlp_ratio,
                 make_cfg(paper=paper, crop_pct=0.875, fixed_input_size=True, paper_params=params, paper_macs=macs))
    return VisionTransformer(cfg, num_classes, in_chans, evolve=evolve, **kwargs)


for _base in VIT_CFGS:
    register_variant(_base, partial(_build, base=_base, evolve=False), f"{_base}: the DeiT configuration.")
    register_variant(f"ea_{_base}", partial(_build, base=_base, evolve=True),
                     f"{_base} with evolving attention (Wang et al., 2021).")
