"""MobileNet v1 (Howard et al., 2017) with plug-in attention, as in the BAM and CBAM papers.

A 3×3/2 stem, then 13 depth-wise separable blocks (3×3 DW conv → BN → ReLU → 1×1 conv →
BN → ReLU), grouped into five stages at strides 2, 4, 8, 16, 32. SE, ECA and CBAM refine
the output of every block; BAM sits after every stage but the last (before each
downsampling). ``width_mult`` is the paper's width multiplier α.

``init="authors"`` (default) initialises with BAM or CBAM as the authors' ResNets
(:func:`~attnvision.models._base.init_attention_module_cnn`; they released no MobileNet code),
otherwise as torchvision's CNNs; ``init="torchvision"`` uses torchvision's for every variant
(:func:`~attnvision.models._base.init_torchvision_cnn`).
"""
from __future__ import annotations

from functools import partial

from torch import nn

from ..layers import create_attn
from ..layers.create_attn import check_attn
from ._base import (Backbone, check_image, check_init, init_attention_module_cnn, init_torchvision_cnn, make_cfg,
                    register_variant, stage_attn_matchers)
from .resnet import _PAPERS, ATTN_KINDS, _between_stages

# (output channels, stride) of the 13 depth-wise separable blocks, split into stages.
_STAGES = (((64, 1),), ((128, 2), (128, 1)), ((256, 2), (256, 1)), ((512, 2),) + ((512, 1),) * 5,
           ((1024, 2), (1024, 1)))


def _conv_bn(cin, cout, kernel, stride, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin, cout, stride, attn=None, attn_kwargs=None):
        super().__init__()
        self.dw = _conv_bn(cin, cin, 3, stride, groups=cin)
        self.pw = _conv_bn(cin, cout, 1, 1)
        self.attn = create_attn(attn, cout, **(attn_kwargs or {}))

    def forward(self, x):
        return self.attn(self.pw(self.dw(x)))


class MobileNetV1(Backbone):
    classifier_path = "fc"

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, *, width_mult: float = 1.0,
                 attn: str | None = None, attn_kwargs: dict | None = None, drop_rate: float = 0.0,
                 drop_path_rate: float | None = None, paper: str = "", init: str = "authors",
                 global_pool: str = "avg"):
        super().__init__()
        check_init("MobileNetV1", init)
        if drop_path_rate:  # timm's scripts pass None or 0.0; anything else would be silently ignored
            raise ValueError(f"MobileNetV1: its blocks have no residual connection, so stochastic depth does not "
                             f"apply; drop_path_rate must be 0 or None, got {drop_path_rate!r}")
        attn = check_attn("MobileNetV1", attn)
        if not width_mult > 0:
            raise ValueError(f"MobileNetV1: width_mult must be positive, got {width_mult!r}")
        self.in_chans, self.num_classes, self.drop_rate = in_chans, num_classes, drop_rate

        def w(c):
            return max(8, int(c * width_mult))

        self.stem = _conv_bn(in_chans, w(32), 3, 2)
        block_attn = None if _between_stages(attn) else attn
        cin, reduction, stages, stage_attn, info = w(32), 2, [], [], []
        for i, spec in enumerate(_STAGES):
            blocks = []
            for cout, stride in spec:
                blocks.append(DepthwiseSeparable(cin, w(cout), stride, block_attn, attn_kwargs))
                cin, reduction = w(cout), reduction * stride
            stages.append(nn.Sequential(*blocks))
            last = i == len(_STAGES) - 1
            between = _between_stages(attn) and not last
            stage_attn.append(create_attn(attn, cin, **(attn_kwargs or {})) if between else nn.Identity())
            info.append(dict(num_chs=cin, reduction=reduction, module=f"stage_attn.{i}" if between else f"stages.{i}"))
        self.stages = nn.ModuleList(stages)
        self.stage_attn = nn.ModuleList(stage_attn)
        self.feature_info = info
        self.num_features = cin
        self.global_pool = self.make_pool(global_pool, num_classes)
        self.fc = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self.pretrained_cfg = make_cfg(paper=paper)
        if init == "authors" and attn in ("bam", "cbam"):
            init_attention_module_cnn(self, self.fc)
        else:
            init_torchvision_cnn(self)

    def _stage_outputs(self, x):
        check_image("MobileNetV1", x, self.in_chans)
        x = self.stem(x)
        for stage, attn in zip(self.stages, self.stage_attn):
            x = attn(self._run(stage, x))
            yield x

    def forward_features(self, x):
        check_image("MobileNetV1", x, self.in_chans)
        x = self.stem(x)
        for stage, attn in zip(self.stages, self.stage_attn):
            x = attn(self._run(stage, x))
        return x

    def group_matcher(self, coarse: bool = False) -> dict:
        """The stem, then each depth-wise separable block (each stage when ``coarse``); BAM joins the
        stage it follows."""
        blocks = r"^stages\.(\d+)\." if coarse else r"^stages\.(\d+)\.(\d+)\."
        return dict(stem=r"^stem\.", blocks=[(blocks, None), *stage_attn_matchers(range(len(self.stages)))])

    def _keep_stages(self, n):
        self.stages, self.stage_attn = self.stages[:n], self.stage_attn[:n]


_MOBILENET_PAPER = "Howard et al., MobileNets: Efficient CNNs for Mobile Vision Applications, 2017"


for _attn in (None, *ATTN_KINDS):
    register_variant(
        "mobilenet_v1" + (f"_{_attn}" if _attn else ""),
        partial(MobileNetV1, attn=_attn, paper=_MOBILENET_PAPER + (f"; {_PAPERS[_attn]}" if _attn else "")),
        "MobileNet v1 " + (f"with {_attn.upper()} attention." if _attn else "without attention."))
