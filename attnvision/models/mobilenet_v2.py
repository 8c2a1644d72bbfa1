"""MobileNetV2 (Sandler et al., CVPR 2018) with plug-in attention: the ECA paper's lightweight backbone.

An inverted residual block expands its input t times with a 1×1 convolution, filters it with a
3×3 depth-wise convolution (stride s) and projects it back with a linear 1×1 convolution
(BN, no activation); the input is added when the shape allows (Sandler et al., Table 1):

    y = x + BN(W_proj · ReLU6(BN(DW_3×3(ReLU6(BN(W_exp · x))))))

SE, ECA and CBAM refine the projected branch before the addition. The ECA paper's model
(BangguWu/ECANet, ``models/eca_mobilenetv2.py``, ``ECA_MobileNetV2``) puts its ECA there with a
fixed kernel: k = 1 for the stages of fewer than 96 channels, k = 3 from 96 up (``c < 96``, their
rule since their commit a46e411; ``k_size``, ``gamma`` or ``b`` in ``attn_kwargs`` override it).
BAM sits after every stride stage but the last, before each downsampling, as in the other BAM
backbones. Module names follow torchvision's ``mobilenet_v2`` (``features.N``, the attention
as the last layer of a block's ``conv``), so torchvision's and the ECA authors' checkpoints load
with ``source="official"``. Initialisation is theirs (``ECA_MobileNetV2.__init__``, the same as
torchvision's): He-normal fan-out convolutions, BN weight 1 and bias 0, the classifier N(0, 0.01)
with a zero bias; with ``init="authors"`` (default) BAM and CBAM modules then start as in the BAM/CBAM
authors' ResNets (:func:`~attnvision.models._base.init_attention_module_cnn`: CBAM's spatial-gate BN at 0,
zero biases), ``init="torchvision"`` leaves them at the network's rule. Channel counts are rounded to multiples of 8
(the reference ``_make_divisible``), which leaves ``width_mult=1.0`` unchanged. The authors' ECA code drops 25%
before the classifier; ``drop_rate`` defaults to the paper's (and torchvision's) 20%.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from ..layers import BAM, CBAM, create_attn
from ..layers.create_attn import check_attn
from ..weights.pretrained import WeightsCfg, register_weights
from ._base import (IMAGENET_MEAN, IMAGENET_STD, MATCH_PREV, Backbone, check_image, check_init,
                    init_attention_module_cnn, make_cfg, register_variant, stage_attn_matchers)
from .resnet import _PAPERS, ATTN_KINDS, _between_stages

# (expansion t, output channels c, repeats n, first stride s) of the 17 inverted residual blocks
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                             (6, 160, 3, 2), (6, 320, 1, 1))
_MI = 2 ** 20
# The ECA paper's Table 2 (units of 2^20, like its other counts): MobileNetV2 3.34 M / 319.4 M FLOPs,
# ECA-MobileNetV2 3.34 M / 320.0 M
PAPER_NUMBERS = {"mobilenet_v2": (3.34 * _MI, 319.4 * _MI), "mobilenet_v2_eca": (3.34 * _MI, 320.0 * _MI)}


def make_divisible(value: float, divisor: int = 8) -> int:
    """The nearest multiple of ``divisor`` to ``value``, never below 90% of it (MobileNet's channel rounding)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """Expand (1×1) → depth-wise 3×3 → project (linear 1×1) → attention, plus the input when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int, attn=None, attn_kwargs=None):
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        layers: list[nn.Module] = [_conv_bn_relu6(cin, hidden, 1)] if expand_ratio != 1 else []
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        if attn is not None:
            layers.append(create_attn(attn, cout, **(attn_kwargs or {})))
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(Backbone):
    classifier_path = "classifier"

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, *, width_mult: float = 1.0,
                 attn: str | None = None, attn_kwargs: dict | None = None, drop_rate: float = 0.2, paper: str = "",
                 init: str = "authors", global_pool: str = "avg", paper_params: float | None = None,
                 paper_macs: float | None = None):
        super().__init__()
        check_init("MobileNetV2", init)
        attn = check_attn("MobileNetV2", attn)
        if not isinstance(width_mult, (int, float)) or not width_mult > 0:
            raise ValueError(f"MobileNetV2: width_mult must be positive, got {width_mult!r}")
        self.in_chans, self.num_classes, self.drop_rate = in_chans, num_classes, drop_rate
        block_attn = None if _between_stages(attn) else attn
        cin = make_divisible(32 * width_mult)
        features: list[nn.Module] = [_conv_bn_relu6(in_chans, cin, 3, 2)]
        info: list[dict[str, Any]] = []
        stage_ends, reduction = [], 2
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            if s == 2:  # a stride stage ends where the next downsampling starts
                stage_ends.append(len(features) - 1)
                info.append(dict(num_chs=cin, reduction=reduction, module=f"features.{len(features) - 1}"))
                reduction *= 2
            cout = make_divisible(c * width_mult)
            kwargs = dict(attn_kwargs or {})
            if block_attn == "eca" and not {"k_size", "gamma", "b"} & set(kwargs):
                kwargs["k_size"] = 1 if c < 96 else 3  # the authors' per-stage kernel (ECA_MobileNetV2)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t, block_attn, kwargs))
                cin = cout
        stage_ends.append(len(features) - 1)
        info.append(dict(num_chs=cin, reduction=reduction, module=f"features.{len(features) - 1}"))
        self.num_features = make_divisible(1280 * max(1.0, width_mult))
        features.append(_conv_bn_relu6(cin, self.num_features, 1))
        self.features = nn.Sequential(*features)
        self._stage_bounds = list(zip([0] + [e + 1 for e in stage_ends[:-1]], [e + 1 for e in stage_ends]))
        self.stage_attn = nn.ModuleList(
            create_attn(attn, f["num_chs"], **(attn_kwargs or {})) if _between_stages(attn) and i < len(info) - 1
            else nn.Identity() for i, f in enumerate(info))
        self.feature_info = info
        self.global_pool = self.make_pool(global_pool, num_classes)
        self.classifier = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self.pretrained_cfg = make_cfg(paper=paper, paper_params=paper_params, paper_macs=paper_macs)
        self._init_weights()
        if init == "authors":
            for m in self.modules():
                if isinstance(m, (BAM, CBAM)):
                    init_attention_module_cnn(m, None)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def _layers(self, start: int, end: int, x: torch.Tensor) -> torch.Tensor:
        for i in range(start, end):  # installed submodules one by one (a slice would be a new module to FX)
            x = self.features[i](x)
        return x

    def _stage_outputs(self, x):
        check_image("MobileNetV2", x, self.in_chans)
        for (a, b), attn in zip(self._stage_bounds, self.stage_attn):
            x = attn(self._run(partial(self._layers, a, b), x))
            yield x

    def forward_features(self, x):
        for x in self._stage_outputs(x):
            pass
        return self.features[-1](x)  # the 1×1 head convolution to num_features channels

    def _final(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self.features[-1](x) if index == len(self.feature_info) - 1 else x

    def group_matcher(self, coarse: bool = False) -> dict:
        """The stem convolution ``features.0``, then each inverted residual block (each stride stage when
        ``coarse``) and the 1×1 head convolution, then the classifier; BAM joins the stage it follows."""
        last = len(self.features) - 1
        if not coarse:
            return dict(stem=r"^features\.0\.", blocks=[(r"^features\.(\d+)\.", None),
                                                       *stage_attn_matchers(b - 1 for _, b in self._stage_bounds)])
        stages = [(rf"^features\.{j}\.", (s,)) for s, (a, b) in enumerate(self._stage_bounds) for j in range(a, b)]
        head_conv = (rf"^features\.{last}\.", (len(self._stage_bounds) - 1, MATCH_PREV))
        return dict(stem=r"^features\.0\.",
                    blocks=[*stages, head_conv, *stage_attn_matchers(range(len(self._stage_bounds)))])

    def _keep_stages(self, n: int) -> None:
        end = self._stage_bounds[n - 1][1]
        self.features = nn.Sequential(*self.features[:end], self.features[-1])
        self._stage_bounds, self.stage_attn = self._stage_bounds[:n], self.stage_attn[:n]

    def _drop_head(self) -> None:
        self.features[-1] = nn.Identity()
        super()._drop_head()

    @staticmethod
    def checkpoint_filter_fn(state_dict: dict, model: "MobileNetV2") -> dict:
        """torchvision's and the ECA authors' layout: the classifier is ``classifier.1`` (after a dropout)."""
        return {k.replace("classifier.1.", "classifier.", 1) if k.startswith("classifier.1.") else k: v
                for k, v in state_dict.items()}


_MOBILENET_V2_PAPER = "Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018"

for _attn in (None, *ATTN_KINDS):
    _name = "mobilenet_v2" + (f"_{_attn}" if _attn else "")
    _params, _macs = PAPER_NUMBERS.get(_name, (None, None))
    register_variant(
        _name,
        partial(MobileNetV2, attn=_attn, paper=_MOBILENET_V2_PAPER + (f"; {_PAPERS[_attn]}" if _attn else ""),
                paper_params=_params, paper_macs=_macs),
        "MobileNetV2 " + (f"with {_attn.upper()} attention." if _attn else "without attention."))


# -- published weights ------------------------------------------------------------------------
# Default: torchvision's V1 weights, trained with the recipe closest to the paper's (torchvision's V2
# used a longer recipe with heavier augmentation). Keys: torchvision's, the classifier at classifier.1.
_TV_EVIDENCE = ("pypi:torchvision==0.29.1 (wheel) torchvision/models/mobilenetv2.py MobileNet_V2_Weights.{} (url, "
                "acc@1, check_hash=True) and transforms/_presets.py ImageClassification")


def _torchvision(tag: str, file: str, top1: float, crop_pct: float) -> WeightsCfg:
    return WeightsCfg(tag=tag, url=f"https://download.pytorch.org/models/{file}",
                      url_sha256=file.rsplit("-", 1)[1].split(".")[0], top1=top1, license="bsd-3-clause",
                      source="official", mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=crop_pct,
                      interpolation="bilinear",
                      evidence=(_TV_EVIDENCE.format("IMAGENET1K_V2" if tag == "tv2_in1k" else "IMAGENET1K_V1"),))


PRETRAINED = {
    "mobilenet_v2": [
        _torchvision("tv_in1k", "mobilenet_v2-b0353104.pth", 71.878, 0.875),
        _torchvision("tv2_in1k", "mobilenet_v2-7ebf99e0.pth", 72.154, 0.9655),  # resize 232, crop 224
    ],
    "mobilenet_v2_eca": [
        WeightsCfg(tag="eca_authors_in1k", page="https://drive.google.com/open?id=1FxzeXPg1SJQZzVVH4HRjMeq_SVMfidUm",
                   top1=72.56, license="mit", source="official", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   crop_pct=0.875, interpolation="bilinear",
                   evidence=(("github.com/BangguWu/ECANet@b332f6b3e6e2afe8a3287dc8ee8440a0fbec74c4 README.md "
                              "(ImageNet table, link 'eca_mobilenetv2_k13'), LICENSE"),
                             "github.com/BangguWu/ECANet main.py (Resize 256, CenterCrop 224)"),
                   notes="no checksum is published; which ECA kernel rule the file follows (c < 96 or c <= 96 for "
                         "k = 1) was not checked: the 96-channel blocks' eca.conv.weight shape tells"),
    ],
}
register_weights(PRETRAINED)
