"""SASA-ResNets: ResNet-26/38/50 with every spatial convolution replaced by local self-attention.

Ramachandran et al., *Stand-Alone Self-Attention in Vision Models*, NeurIPS 2019, Sec. 3.1-3.2:
the bottleneck ResNet (layers [1, 2, 4, 1], [2, 3, 5, 2], [3, 4, 6, 3]) with each 3×3
convolution swapped for :class:`~attnvision.layers.LocalSelfAttention2d` (k = 7, 8 heads,
relative positions); spatial downsampling is the attention followed by 2×2 average pooling.
``stem="attention"`` is the paper's full-attention model (the spatially-aware attention stem:
attention within each 4×4 block, BN, 4×4 max pool); ``stem="conv"`` keeps ResNet's 7×7/2 conv
and 3×3/2 max pool ("conv-stem + attention"). ``kernel_size``, ``heads`` and ``pos`` are the
paper's ablation switches (Tables 4-5); ``logits`` ablates the content-content (q·k) and
content-relative (q·r) interactions, and ``attention_stages`` picks the layer groups (stages
1-4) whose spatial layers are attention, the others keeping ResNet's 3×3 convolution (strided
itself), the paper's study of where attention pays (Sec. 4.3).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial

from torch import nn

from ..layers import DropPath, drop_path_rates
from ..layers.local_attention import LOGIT_MODES, POS_MODES, LocalSelfAttention2d, SpatiallyAwareStem
from ..layers.pointwise import PointwiseConv2d
from ._base import Backbone, check_image, keep_layers, make_cfg, register_variant

STEMS = ("attention", "conv")
PAPER = "Ramachandran et al., Stand-Alone Self-Attention in Vision Models, NeurIPS 2019"


class SASABottleneck(nn.Module):
    """1×1 conv → BN → ReLU → local self-attention (stride: then average pooling) → BN → ReLU → 1×1 conv → BN,
    + shortcut, ReLU. ``attention=False`` is ResNet's bottleneck: a 3×3 conv (with the stride) in place."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, *,
                 kernel_size: int = 7, heads: int = 8, pos: str = "relative", logits: str = "both",
                 attention: bool = True, drop_path: float = 0.0):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = PointwiseConv2d(cin, planes, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.attention = attention
        if attention:
            self.attn = LocalSelfAttention2d(planes, planes, kernel_size, heads, stride, pos, logits)
        else:
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = PointwiseConv2d(planes, out, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.attn(out) if self.attention else self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self.drop_path(out) + shortcut)


@dataclass(frozen=True)
class SASACfg:
    """One SASA-ResNet: bottleneck depths per stage; ``widths`` are the stages' attention widths."""

    layers: tuple[int, ...]
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem_width: int = 64
    cfg: dict = field(default_factory=dict)


class SASAResNet(Backbone):
    """A config-driven SASA-ResNet.

    Args:
        cfg: the variant (stage depths, widths).
        num_classes, in_chans: head outputs and input channels.
        stem: "attention" (spatially-aware attention stem, the paper's full-attention model) or
            "conv" (ResNet's 7×7/2 conv + 3×3/2 max pool).
        kernel_size, heads, pos, logits: of every attention layer (7, 8, "relative", "both").
        attention_stages: the stages (1-based layer groups) whose spatial layers are attention (all);
            the others use a 3×3 convolution.
        stem_kernel, stem_mixtures: block side and value mixtures of the attention stem (4, 4).
        drop_rate: dropout before the classifier; drop_path_rate: stochastic depth, linear in depth.
    """

    classifier_path = "fc"

    def __init__(self, cfg: SASACfg, num_classes: int = 1000, in_chans: int = 3, *, stem: str = "attention",
                 kernel_size: int = 7, heads: int = 8, pos: str = "relative", logits: str = "both",
                 attention_stages=None, stem_kernel: int = 4, stem_mixtures: int = 4, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__()
        name = type(self).__name__
        if stem not in STEMS:
            raise ValueError(f"{name}: stem must be one of {STEMS}, got {stem!r}")
        if pos not in POS_MODES:
            raise ValueError(f"{name}: pos must be one of {POS_MODES}, got {pos!r}")
        if logits not in LOGIT_MODES:
            raise ValueError(f"{name}: logits must be one of {LOGIT_MODES}, got {logits!r}")
        stages = tuple(range(1, len(cfg.layers) + 1))
        attention_stages = stages if attention_stages is None else tuple(attention_stages)
        if not set(attention_stages) <= set(stages) or len(set(attention_stages)) != len(attention_stages):
            raise ValueError(f"{name}: attention_stages must be distinct stages among {stages}, got {attention_stages}")
        self.attention_stages = tuple(sorted(attention_stages))
        self.cfg, self.in_chans, self.num_classes, self.drop_rate = cfg, in_chans, num_classes, drop_rate
        self.stem_kind = stem
        if stem == "attention":
            self.stem: nn.Module = SpatiallyAwareStem(in_chans, cfg.stem_width, stem_kernel, stem_mixtures)
            reduction = stem_kernel
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_chans, cfg.stem_width, 7, stride=2, padding=3, bias=False),
                                      nn.BatchNorm2d(cfg.stem_width), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, stride=2, padding=1))
            reduction = 4
        dpr = drop_path_rates(drop_path_rate, sum(cfg.layers))
        cin, idx, info = cfg.stem_width, 0, []
        for i, (depth, planes) in enumerate(zip(cfg.layers, cfg.widths)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            cout = planes * SASABottleneck.expansion
            blocks = []
            for j in range(depth):
                s = stride if j == 0 else 1
                downsample = None
                if s != 1 or cin != cout:
                    downsample = nn.Sequential(PointwiseConv2d(cin, cout, stride=s, bias=False), nn.BatchNorm2d(cout))
                blocks.append(SASABottleneck(cin, planes, s, downsample, kernel_size=kernel_size, heads=heads,
                                             pos=pos, logits=logits, attention=i + 1 in self.attention_stages,
                                             drop_path=dpr[idx]))
                cin, idx = cout, idx + 1
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            info.append(dict(num_chs=cout, reduction=reduction, module=f"layer{i + 1}"))
        self.num_stages = len(cfg.layers)
        self.feature_info = info
        self.num_features = cin
        self.global_pool = self.make_pool(global_pool, num_classes)
        self.fc = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self.pretrained_cfg = dict(cfg.cfg)
        if stem in cfg.cfg.get("paper_by_stem", {}):
            self.pretrained_cfg["paper_params"], self.pretrained_cfg["paper_macs"] = cfg.cfg["paper_by_stem"][stem]
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def stages(self) -> list[nn.Module]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def forward_stem(self, x):
        check_image(type(self).__name__, x, self.in_chans)
        return self.stem(x)

    def group_matcher(self, coarse: bool = False) -> dict:
        """The stem, then each bottleneck of ``layer1``… (each stage when ``coarse``), then the head."""
        return dict(stem=r"^stem\.", blocks=r"^layer(\d+)\." if coarse else r"^layer(\d+)\.(\d+)\.")

    def _keep_stages(self, n):
        keep_layers(self, n)

    def forward_features(self, x):
        x = self.forward_stem(x)
        for stage in self.stages:
            x = self._run(stage, x)
        return x


# The paper's Table 1 (ImageNet, 224×224): parameters and FLOPS per stem. Its FLOPS count a
# multiply-add as two operations (ResNet-50: 8.2 B), so MACs are half of them.
_M, _G = 1e6, 1e9
PAPER_NUMBERS: dict[str, dict[str, tuple[float, float]]] = {
    "sasa_resnet26": {"conv": (10.3 * _M, 4.5 / 2 * _G), "attention": (10.3 * _M, 4.7 / 2 * _G)},
    "sasa_resnet38": {"conv": (14.1 * _M, 5.7 / 2 * _G), "attention": (14.1 * _M, 6.1 / 2 * _G)},
    "sasa_resnet50": {"conv": (18.0 * _M, 7.0 / 2 * _G), "attention": (18.0 * _M, 7.2 / 2 * _G)},
}
SASA_CFGS: dict[str, SASACfg] = {
    "sasa_resnet26": SASACfg((1, 2, 4, 1)),
    "sasa_resnet38": SASACfg((2, 3, 5, 2)),
    "sasa_resnet50": SASACfg((3, 4, 6, 3)),
}


def _build(num_classes, in_chans, *, name, **kwargs):
    cfg = replace(SASA_CFGS[name], cfg=make_cfg(paper=PAPER, paper_by_stem=PAPER_NUMBERS[name]))
    return SASAResNet(cfg, num_classes, in_chans, **kwargs)


for _name in SASA_CFGS:
    register_variant(_name, partial(_build, name=_name),
                     f"{_name}: bottleneck ResNet with local self-attention (k=7, 8 heads) in place of every 3×3 "
                     f"conv; stem='attention' (default) or 'conv'.")
