"""Visual Attention Network (Guo, Lu, Liu, Cheng and Hu, "Visual Attention Network", CVMJ 2023).

Four stages at strides 4, 8, 16, 32. Stage i embeds its input with an overlapping patch
embedding (a 7×7/4 conv in stage 1, 3×3/2 after, each + BN), repeats L_i blocks, and ends
with a LayerNorm over the channels of every position. A block (Fig. 3d) is

    X = X + DropPath(λ₁ ⊙ Attn(BN(X)))      Attn(Z) = Conv₁ₓ₁(LKA(GELU(Conv₁ₓ₁(Z)))) + Z
    X = X + DropPath(λ₂ ⊙ CFF(BN(X)))       CFF(Z)  = Conv₁ₓ₁(GELU(DW₃ₓ₃(Conv₁ₓ₁(Z))))

with LKA the large kernel attention of :mod:`attnvision.layers.lka` (K=21, d=3), the
convolutional feed-forward network CFF of hidden width r_i·C_i, and layer scales λ
starting at 1e-2. The classifier averages the normalised stage-4 map. As in the authors'
code (VAN-Classification), the attention branch carries its own inner shortcut ``+ Z``.

Sizes (Table 5 of the paper): widths C, depths L, MLP ratios r

    B0  (32, 64, 160, 256)   (3, 3, 5, 2)    (8, 8, 4, 4)
    B1  (64, 128, 320, 512)  (2, 2, 4, 2)    (8, 8, 4, 4)
    B2  (64, 128, 320, 512)  (3, 3, 12, 3)   (8, 8, 4, 4)
    B3  (64, 128, 320, 512)  (3, 5, 27, 3)   (8, 8, 4, 4)
    B4  (64, 128, 320, 512)  (3, 6, 40, 3)   (8, 8, 4, 4)
    B5  (96, 192, 480, 768)  (3, 3, 24, 3)   (8, 8, 4, 4)
    B6  (96, 192, 384, 768)  (6, 6, 90, 6)   (8, 8, 4, 4)

Any input size works: each patch embedding gives ⌈H/s⌉×⌈W/s⌉, nothing is cropped.
``checkpoint_filter_fn`` reads the authors' checkpoints and the Hugging Face transformers
layout (``VanForImageClassification``). ``create_model("van_b0", pretrained=True)`` downloads the
authors' ImageNet weights of B0–B3 (``PRETRAINED`` below) and sets their preprocessing in
``pretrained_cfg``: mean = std = 0.5, crop 0.9, bicubic, the authors' (not ImageNet's mean/std, which the
model keeps when built without them).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial
from typing import cast

import torch
from torch import nn

from ..weights import remap_keys
from ..weights.keymaps import KeyRule
from ..weights.pretrained import WeightsCfg, register_weights
from ..layers import LKA, DropPath, LayerScale, drop_path_rates
from ..layers.lka import FAST_CHANNELS_LAST
from ..layers.pointwise import PointwiseConv2d
from ..layers._checks import check_positive_int, is_tracing
from ._base import MATCH_PREV, Backbone, check_image, init_fan_out_trunc_normal, make_cfg, register_variant


class OverlapPatchEmbed(nn.Module):
    """k×k conv with stride s and padding k//2 (neighbouring patches overlap), then BN."""

    def __init__(self, in_chs: int, dim: int, patch_size: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chs, dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x):
        return self.norm(self.proj(x))  # (B, dim, ⌈H/s⌉, ⌈W/s⌉)


class VANAttention(nn.Module):
    """Attn(Z) = Conv₁ₓ₁(LKA(GELU(Conv₁ₓ₁(Z)))) + Z."""

    def __init__(self, dim: int, lka_kernel: int = 21, lka_dilation: int = 3, **lka_kwargs):
        super().__init__()
        self.proj_1 = PointwiseConv2d(dim, dim)
        self.act = nn.GELU()
        self.lka = LKA(dim, lka_kernel, lka_dilation, **lka_kwargs)
        self.proj_2 = PointwiseConv2d(dim, dim)

    def forward(self, x):
        return self.proj_2(self.lka(self.act(self.proj_1(x)))) + x


class ConvFFN(nn.Module):
    """CFF(Z) = Conv₁ₓ₁(GELU(DW₃ₓ₃(Conv₁ₓ₁(Z)))), hidden width ``hidden``, dropout after GELU and at the end."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = PointwiseConv2d(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = PointwiseConv2d(hidden, dim)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x):
        x = self.drop(self.act(self.dwconv(self.fc1(x))))  # (B, hidden, H, W)
        return self.drop(self.fc2(x))


class VANBlock(nn.Module):
    """X += DropPath(λ₁ ⊙ Attn(BN(X))); X += DropPath(λ₂ ⊙ CFF(BN(X)))."""

    def __init__(self, dim: int, mlp_ratio: float, *, drop: float = 0.0, drop_path: float = 0.0,
                 layer_scale_init: float = 1e-2, lka_kernel: int = 21, lka_dilation: int = 3, **lka_kwargs):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = VANAttention(dim, lka_kernel, lka_dilation, **lka_kwargs)
        self.ls1 = LayerScale(dim, layer_scale_init, channel_dim=1)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), drop)
        self.ls2 = LayerScale(dim, layer_scale_init, channel_dim=1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class VANStage(nn.Module):
    """Patch embedding → blocks → LayerNorm over the channels of each position."""

    def __init__(self, in_chs: int, dim: int, depth: int, *, patch_size: int, stride: int, mlp_ratio: float,
                 drop_path: list[float], norm_eps: float = 1e-6, **block_kwargs):
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(in_chs, dim, patch_size, stride)
        self.blocks = nn.Sequential(*[VANBlock(dim, mlp_ratio, drop_path=dp, **block_kwargs) for dp in drop_path])
        self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def forward(self, x):
        x = self.blocks(self.patch_embed(x))
        # LayerNorm on (B, H, W, C) views: no copy when the map is channels_last.
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C, H, W)


@dataclass(frozen=True)
class VANCfg:
    dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    mlp_ratios: tuple[float, float, float, float] = (8, 8, 4, 4)
    cfg: dict = field(default_factory=dict)  # pretrained_cfg (paper, preprocessing, paper numbers)


class VAN(Backbone):
    """A config-driven Visual Attention Network.

    Args:
        cfg: widths, depths and MLP ratios of the variant.
        num_classes, in_chans: head outputs (0: no head) and input channels.
        lka_kernel, lka_dilation: K and d of every LKA (the kernel-size ablation: (7, 2), (14, 3),
            (21, 3), (28, 4)).
        lka_kwargs: the LKA ablation switches for every block (``dw_conv``, ``dilated_conv``,
            ``pointwise``, ``multiply``, ``sigmoid``; see :class:`~attnvision.layers.LKA`).
        drop_rate: dropout inside the CFF only; the classifier reads the pooled features undropped, as
            in the authors' ``VAN`` (Visual-Attention-Network/VAN-Classification ``models/van.py``:
            ``drop_rate`` reaches only ``Mlp(drop=...)``). drop_path_rate: stochastic depth,
            rising linearly over all blocks; layer_scale_init: λ at initialisation.
        global_pool: the head's pooling (:class:`~attnvision.layers.SelectAdaptivePool2d`; "avg" by default).
    """

    classifier_path = "head"

    def __init__(self, cfg: VANCfg, num_classes: int = 1000, in_chans: int = 3, *, lka_kernel: int = 21,
                 lka_dilation: int = 3, lka_kwargs: dict | None = None, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, layer_scale_init: float = 1e-2, global_pool: str = "avg"):
        super().__init__()
        check_positive_int("VAN", "in_chans", in_chans)
        if lka_kwargs is not None and not isinstance(lka_kwargs, dict):
            raise TypeError(f"VAN: lka_kwargs must be a dict, got {type(lka_kwargs).__name__}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"VAN: drop_rate must be in [0, 1), got {drop_rate!r}")
        self.cfg, self.in_chans, self.num_classes = cfg, in_chans, num_classes
        dpr = drop_path_rates(drop_path_rate, sum(cfg.depths))
        stages, info, cin, start = [], [], in_chans, 0
        for i, (dim, depth, ratio) in enumerate(zip(cfg.dims, cfg.depths, cfg.mlp_ratios)):
            stages.append(VANStage(cin, dim, depth, patch_size=7 if i == 0 else 3, stride=4 if i == 0 else 2,
                                   mlp_ratio=ratio, drop_path=dpr[start:start + depth], drop=drop_rate,
                                   layer_scale_init=layer_scale_init, lka_kernel=lka_kernel,
                                   lka_dilation=lka_dilation, **(lka_kwargs or {})))
            info.append(dict(num_chs=dim, reduction=2 ** (i + 2), module=f"stages.{i}"))
            cin, start = dim, start + depth
        self.stages = nn.ModuleList(stages)
        self.feature_info = info
        self.num_features = cin
        self.global_pool = self.make_pool(global_pool, num_classes)
        self.head = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self.pretrained_cfg = dict(cfg.cfg)
        self.apply(init_fan_out_trunc_normal)  # the authors' initialisation

    def forward_stem(self, x):
        """VAN has no stem apart from the first stage's patch embedding: the checked input, on
        channels-last memory where that is faster."""
        check_image(type(self).__name__, x, self.in_chans)
        if is_tracing() or x.dtype in FAST_CHANNELS_LAST:
            # Depth-wise convolutions and the per-position LayerNorm are fastest on channels_last maps.
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def group_matcher(self, coarse: bool = False) -> dict:
        """The first patch embedding, then each later patch embedding, each block (each stage when
        ``coarse``), the stage's norm joining its last block, then the head."""
        if coarse:
            return dict(stem=r"^stages\.0\.patch_embed\.", blocks=r"^stages\.(\d+)\.")
        return dict(stem=r"^stages\.0\.patch_embed\.",
                    blocks=[(r"^stages\.(\d+)\.patch_embed\.", (-1,)), (r"^stages\.(\d+)\.blocks\.(\d+)\.", None),
                            (r"^stages\.(\d+)\.norm\.", (MATCH_PREV,))])

    def _keep_stages(self, n):
        self.stages = self.stages[:n]

    def forward_features(self, x):
        x = self.forward_stem(x)
        for stage in self.stages:
            x = self._run(stage, x)
        return x  # (B, C₄, ⌈H/32⌉, ⌈W/32⌉), normalised

    @staticmethod
    def checkpoint_filter_fn(state_dict, model):
        return convert_official_van(state_dict, model)


# -- the authors' and Hugging Face checkpoints ------------------------------------------------

# Hugging Face transformers' VanForImageClassification → the authors' layout. Its
# ``van.layernorm`` is never used in its forward, so it is dropped.
_HF_TO_OFFICIAL: list[KeyRule] = [
    (r"^classifier\.", "head."),
    (r"^van\.encoder\.stages\.(\d+)\.", lambda m: f"stage{int(m[1]) + 1}."),
    (r"^stage(\d+)\.embeddings\.convolution\.", r"patch_embed\1.proj."),
    (r"^stage(\d+)\.embeddings\.normalization\.", r"patch_embed\1.norm."),
    (r"^stage(\d+)\.normalization\.", r"norm\1."),
    (r"^stage(\d+)\.layers\.", r"block\1."),
    (r"\.pre_normomalization\.", ".norm1."),
    (r"\.post_normalization\.", ".norm2."),
    (r"\.attention_scaling\.weight$", ".layer_scale_1"),
    (r"\.mlp_scaling\.weight$", ".layer_scale_2"),
    (r"\.attention\.pre_projection\.conv\.", ".attn.proj_1."),
    (r"\.attention\.post_projection\.", ".attn.proj_2."),
    (r"\.attention\.attention_layer\.attention\.depth_wise\.", ".attn.spatial_gating_unit.conv0."),
    (r"\.attention\.attention_layer\.attention\.depth_wise_dilated\.", ".attn.spatial_gating_unit.conv_spatial."),
    (r"\.attention\.attention_layer\.attention\.point_wise\.", ".attn.spatial_gating_unit.conv1."),
    (r"\.mlp\.in_dense\.", ".mlp.fc1."),
    (r"\.mlp\.depth_wise\.", ".mlp.dwconv.dwconv."),
    (r"\.mlp\.out_dense\.", ".mlp.fc2."),
]

_OFFICIAL_TO_OURS: list[KeyRule] = [
    (r"^patch_embed(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.patch_embed."),
    (r"^block(\d)\.(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}."),
    (r"^norm(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.norm."),
    (r"\.layer_scale_1$", ".ls1.gamma"),
    (r"\.layer_scale_2$", ".ls2.gamma"),
    (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
]


def convert_official_van(state_dict: dict, model: VAN) -> dict:
    """The authors' VAN-Classification keys (or Hugging Face's ``VanForImageClassification``) → ours."""
    if any(k.startswith("van.encoder.") for k in state_dict):
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("van.layernorm.")}
        state_dict = remap_keys(state_dict, _HF_TO_OFFICIAL)
    out = {}
    for key, value in remap_keys(state_dict, _OFFICIAL_TO_OURS).items():
        lka = re.match(r"^(stages\.\d+\.blocks\.\d+\.attn)\.spatial_gating_unit\.(.*)$", key)
        if lka:
            layer = cast(LKA, model.get_submodule(f"{lka[1]}.lka"))
            key = f"{lka[1]}.lka.{layer.convert_official_key(lka[2])}"
        out[key] = value
    return out


def hf_van_variant(config: dict) -> str:
    """The ``van_b*`` that a Hugging Face ``VanConfig`` (its ``config.json`` as a dict) describes.

    Widths, depths and MLP ratios pick the variant; the settings our VAN does not vary (patch
    sizes, strides, GELU, LayerNorm ε) must be the authors', else the weights would compute
    something else.
    """
    fixed = dict(patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2], hidden_act="gelu", layer_norm_eps=1e-6)
    other = [f"{k}={config[k]!r} (ours: {v!r})" for k, v in fixed.items() if k in config and config[k] != v]
    if other:
        raise ValueError(f"load_model: the Hugging Face VAN config differs from the authors' VAN: {', '.join(other)}")
    sizes = tuple(config.get("hidden_sizes", ())), tuple(config.get("depths", ()))
    ratios = tuple(float(r) for r in config.get("mlp_ratios", (8, 8, 4, 4)))
    for name, (dims, depths, _, _) in VAN_VARIANTS.items():
        if sizes == (dims, depths) and ratios == (8.0, 8.0, 4.0, 4.0):
            return name
    raise ValueError(f"load_model: the Hugging Face VAN config (hidden_sizes={list(sizes[0])}, "
                     f"depths={list(sizes[1])}, mlp_ratios={list(ratios)}) is none of "
                     + ", ".join(f"{n} {list(d)}/{list(L)}" for n, (d, L, _, _) in VAN_VARIANTS.items()))


# -- variants ---------------------------------------------------------------------------------

_PAPER = "Guo et al., Visual Attention Network, Computational Visual Media 2023"

# (widths, depths, paper parameters, paper MACs at 224×224): Table 5 of the paper; the MACs of
# B0–B4 with the second decimal as reported with the released checkpoints.
_M, _G = 1e6, 1e9
VAN_VARIANTS = {
    "van_b0": ((32, 64, 160, 256), (3, 3, 5, 2), 4.1 * _M, 0.88 * _G),
    "van_b1": ((64, 128, 320, 512), (2, 2, 4, 2), 13.9 * _M, 2.52 * _G),
    "van_b2": ((64, 128, 320, 512), (3, 3, 12, 3), 26.6 * _M, 5.03 * _G),
    "van_b3": ((64, 128, 320, 512), (3, 5, 27, 3), 44.8 * _M, 8.99 * _G),
    "van_b4": ((64, 128, 320, 512), (3, 6, 40, 3), 60.3 * _M, 12.22 * _G),
    "van_b5": ((96, 192, 480, 768), (3, 3, 24, 3), 90.0 * _M, 17.2 * _G),
    "van_b6": ((96, 192, 384, 768), (6, 6, 90, 6), 200.0 * _M, 38.4 * _G),
}


def _build(num_classes, in_chans, *, cfg: VANCfg, **kwargs):
    return VAN(cfg, num_classes, in_chans, **kwargs)


for _name, (_dims, _depths, _params, _macs) in VAN_VARIANTS.items():
    _cfg = VANCfg(_dims, _depths, cfg=make_cfg(paper=_PAPER, crop_pct=0.9, interpolation="bicubic",
                                               paper_params=_params, paper_macs=_macs))
    register_variant(_name, partial(_build, cfg=_cfg), f"VAN-{_name[-2:].upper()}: widths {_dims}, depths {_depths}.")


# -- published weights ------------------------------------------------------------------------
# The authors' weights, the only ones (the Hugging Face transformers copies, Visual-Attention-Network/van-*,
# hold the same tensors converted; their file name was not read, so they are not listed). timm 0.4's
# CheckpointSaver files, which keep the training command line as an argparse.Namespace beside the
# state_dict: accepted by name, nothing else. The authors trained and evaluated with their default_cfg,
# timm 0.4.12's vision_transformer._cfg: mean = std = 0.5, crop 0.9, bicubic (not ImageNet's mean/std).
_VAN_AUTHORS = "github.com/Visual-Attention-Network/VAN-Classification@e19779b53a1b0828b51ecb4412d577541aee83a7"


def _authors(size: str, file: str, top1: float) -> WeightsCfg:
    repo = f"Visual-Attention-Network/VAN-{size}-original"
    return WeightsCfg(
        tag="authors_in1k", hf_hub_id=repo, hf_hub_filename=file,
        url=f"https://huggingface.co/{repo}/resolve/main/{file}",
        top1=top1, license="apache-2.0 (for commercial use, the README asks to contact the authors)",
        source="official", safe_globals=("argparse.Namespace",), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        crop_pct=0.9, interpolation="bicubic",
        evidence=(f"{_VAN_AUTHORS} README.md (IN-1K table, Hugging Face links), LICENSE",
                  f"{_VAN_AUTHORS} models/van.py (model_urls, load_model_weights: checkpoint['state_dict'])",
                  ("github.com/huggingface/pytorch-image-models (tag v0.4.12) timm/models/vision_transformer.py _cfg, "
                   "timm/data/config.py resolve_data_config, timm/utils/checkpoint_saver.py (save_state['args'])")),
        notes="no checksum is published")


PRETRAINED = {
    "van_b0": [_authors("Tiny", "van_tiny_754.pth.tar", 75.4)],
    "van_b1": [_authors("Small", "van_small_811.pth.tar", 81.1)],
    "van_b2": [_authors("Base", "van_base_828.pth.tar", 82.8)],
    "van_b3": [_authors("Large", "van_large_839.pth.tar", 83.9)],
}
register_weights(PRETRAINED)
