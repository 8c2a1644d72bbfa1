"""ResNet family with plug-in channel/spatial attention (SE, ECA, BAM, CBAM).

ResNet (He et al., CVPR 2016) on ImageNet and CIFAR, pre-activation ResNet (He et al.,
ECCV 2016), Wide ResNet (Zagoruyko and Komodakis, 2016) and ResNeXt (Xie et al., 2017),
each plain and with ``_se``, ``_eca``, ``_bam`` and ``_cbam``:

- SE, ECA and CBAM sit at the end of every residual branch, after its last BN and
  before the addition (SE paper Fig. 3, ECA Fig. 2, CBAM Fig. 3);
- BAM sits at each bottleneck of the network, after every stage but the last, i.e. before
  each spatial downsampling (BAM paper Fig. 1).

Module names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ``fc``) so its
weights load as they are; ``checkpoint_filter_fn`` reads the authors' BAM/CBAM
(Jongchan/attention-module) and ECA (BangguWu/ECANet) checkpoints, and timm's SE-ResNets
(``seresnet*`` and the ``legacy_seresnet*``/``legacy_seresnext*`` ports of the authors' models).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..weights import remap_keys
from ..weights.pretrained import WeightsCfg, register_weights
from ..layers import BAM, DropPath, create_attn, drop_path_rates
from ..layers.bam import OFFICIAL_BAM_NEEDS_PRODUCT
from ..layers.create_attn import attn_placement, check_attn
from ..layers.pointwise import PointwiseConv2d
from ._base import (IMAGENET_MEAN, IMAGENET_STD, MATCH_PREV, Backbone, CIFAR_MEAN, CIFAR_STD, check_image,
                    check_init, init_attention_module_cnn, init_torchvision_cnn, keep_layers, make_cfg,
                    register_variant, stage_attn_matchers)

ATTN_KINDS = ("se", "eca", "bam", "cbam")  # the papers' kinds, registered as variants (resnet50_cbam, ...)


def _between_stages(attn: str | None) -> bool:
    """A kind placed between stages (BAM) rather than inside every block; any registered kind works."""
    return attn is not None and attn_placement(attn) == "stage"


def _conv3x3(cin, cout, stride=1, groups=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def _conv1x1(cin, cout, stride=1):
    return PointwiseConv2d(cin, cout, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """He et al.'s CIFAR shortcut "option A": subsample by the stride and zero-pad new channels."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride, self.pad = stride, cout - cin

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.pad))


class BasicBlock(nn.Module):
    """conv3×3 → BN → ReLU → conv3×3 → BN → attention, + shortcut, ReLU."""

    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None, *, attn=None, attn_kwargs=None,
                 drop_path=0.0, groups=1, base_width=64, stride_in_1x1=False, block_dropout=0.0):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock: groups and base_width are for bottleneck blocks")
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attn = create_attn(attn, planes, **(attn_kwargs or {}))
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.drop_path(self.attn(self.bn2(self.conv2(out))))
        out += shortcut  # in place: one activation-sized allocation less per block
        return self.relu(out)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (grouped for ResNeXt) → 1×1, each with BN, then attention, + shortcut.

    The stride sits in the 3×3 conv (torchvision, and the authors' CBAM code) unless
    ``stride_in_1x1`` (the original ResNet, whose FLOPs the papers count).
    """

    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None, *, attn=None, attn_kwargs=None,
                 drop_path=0.0, groups=1, base_width=64, stride_in_1x1=False, block_dropout=0.0):
        super().__init__()
        width = int(planes * base_width / 64) * groups
        out = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _conv1x1(cin, width, s1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, s3, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, out)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.attn = create_attn(attn, out, **(attn_kwargs or {}))
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.drop_path(self.attn(self.bn3(self.conv3(out))))
        out += shortcut
        return self.relu(out)


class PreActBasicBlock(nn.Module):
    """Pre-activation block (He et al., 2016b; Wide ResNet): BN → ReLU → conv3×3 → BN → ReLU →
    (dropout) → conv3×3 → attention, + shortcut. A projection shortcut reads the activated input."""

    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None, *, attn=None, attn_kwargs=None,
                 drop_path=0.0, groups=1, base_width=64, stride_in_1x1=False, block_dropout=0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(block_dropout) if block_dropout > 0 else nn.Identity()
        self.conv2 = _conv3x3(planes, planes)
        self.attn = create_attn(attn, planes, **(attn_kwargs or {}))
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        pre = self.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))
        return self.drop_path(self.attn(out)) + shortcut


BLOCKS: dict[str, type[BasicBlock | Bottleneck | PreActBasicBlock]] = {
    "basic": BasicBlock, "bottleneck": Bottleneck, "preact_basic": PreActBasicBlock}


@dataclass(frozen=True)
class ResNetCfg:
    """One ResNet variant. ``widths`` are the stages' ``planes`` (outputs × block expansion)."""

    block: str
    layers: tuple[int, ...]
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem: str = "imagenet"
    stem_width: int = 64
    groups: int = 1
    base_width: int = 64
    shortcut: str = "conv"           # "conv": 1×1 projection (+BN unless pre-activation); "pad": option A
    eca_kernels: tuple[int, ...] | None = None  # per-stage ECA kernel sizes of the released checkpoints
    cfg: dict = field(default_factory=dict)     # pretrained_cfg (paper, preprocessing, paper numbers)


class ResNet(Backbone):
    """A config-driven ResNet.

    Args:
        cfg: the variant (block type, depths, widths, ...).
        num_classes, in_chans: head outputs and input channels.
        attn: ``None``, one of "se", "eca", "bam", "cbam", or any kind registered with
            :func:`~attnvision.register_attn` (placed in every block, or between stages if registered so).
        attn_kwargs: passed to every attention module (e.g. ``reduction=8``,
            ``combine="product"`` for the authors' BAM checkpoints).
        eca_kernels: how ECA picks each stage's 1-D kernel size (only with ``attn="eca"``):
            "checkpoint": the kernels of the authors' released checkpoints (BangguWu/ECANet README,
            ``k_size`` of ``eca_resnet*``: ResNet-18 (3, 5, 7, 7), -34 (3, 3, 5, 7), -50 (3, 5, 5, 7),
            -101 and -152 (3, 3, 5, 7)), so their weights load; "paper": eq. 14 of the ECA paper,
            k = |log2(C)/γ + b/γ|_odd of each block's C, with ``gamma`` (γ, default 2) and ``b``
            (default 1) from ``attn_kwargs``. ``None`` (default): "checkpoint" for the variants with
            released kernels (``resnet18/34/50/101/152_eca``), "paper" for the others. Passing ``gamma``
            or ``b`` with "checkpoint" is an error (they would change nothing), and so is ``k_size``
            (one kernel for every stage) together with an explicit ``eca_kernels``.
        stem: "imagenet" (7×7/2 conv + 3×3/2 max pool) or "cifar" (3×3/1 conv).
        stride_in_1x1: stride in the bottleneck's first 1×1 conv (original ResNet layout).
        stem_pool: "pad" (3×3/2 max pool with padding 1, torchvision) or "ceil" (no padding, output
            size rounded up: the Caffe layout of the SENet authors' models, timm's ``legacy_seresnet*``).
        drop_rate: dropout before the classifier; drop_path_rate: stochastic depth, linear in depth.
        global_pool: the head's pooling, "avg" (default), "max", "avgmax", "catavgmax" (2× the features)
            or "" (none: ``forward`` returns the final map; needs ``num_classes=0``).
        block_dropout: dropout inside pre-activation blocks (Wide ResNet).
        init: "authors" (default): the initialisation of the code each variant comes from —
            with BAM or CBAM the authors' ResNets' (:func:`~attnvision.models._base.init_attention_module_cnn`:
            CBAM's spatial-gate BN starts at 0, every bias at 0, the classifier He-normal on fan-in),
            otherwise torchvision's, which the ECA authors' code equals; "torchvision": torchvision's
            for every variant (:func:`~attnvision.models._base.init_torchvision_cnn`).
        zero_init_last: then set the last BN weight of every residual branch to 0.
        channels_last: run on channels-last memory (the same maps, computed faster by the CPU
            convolution kernels: about 1.2x for inference and 1.1x for training of ResNet-50).
        make_block: for derived families, ``make_block(stage, index, block_cls, *args, **kwargs)`` builds
            each residual block in place of ``block_cls(*args, **kwargs)``.
    """

    classifier_path = "fc"

    def __init__(self, cfg: ResNetCfg, num_classes: int = 1000, in_chans: int = 3, *, attn: str | None = None,
                 attn_kwargs: dict | None = None, stem: str | None = None, stride_in_1x1: bool = False,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, block_dropout: float = 0.0,
                 zero_init_last: bool = False, make_block=None, channels_last: bool = True, stem_pool: str = "pad",
                 init: str = "authors", global_pool: str = "avg", eca_kernels: str | None = None):
        super().__init__()
        check_init(type(self).__name__, init)
        attn = check_attn("ResNet", attn)
        stem = stem or cfg.stem
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"ResNet: stem must be 'imagenet' or 'cifar', got {stem!r}")
        if stem_pool not in ("pad", "ceil"):
            raise ValueError(f"ResNet: stem_pool must be 'pad' or 'ceil', got {stem_pool!r}")
        if attn_kwargs is not None and not isinstance(attn_kwargs, dict):
            raise TypeError(f"ResNet: attn_kwargs must be a dict, got {type(attn_kwargs).__name__}")
        stage_kernels = _eca_stage_kernels(cfg, attn, attn_kwargs or {}, eca_kernels)
        block = BLOCKS[cfg.block]
        preact = cfg.block.startswith("preact")
        self.cfg, self.attn, self.in_chans, self.num_classes = cfg, attn, in_chans, num_classes
        self.drop_rate, self.channels_last = drop_rate, channels_last

        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, cfg.stem_width, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = (nn.MaxPool2d(3, stride=2, padding=1) if stem_pool == "pad"
                                       else nn.MaxPool2d(3, stride=2, ceil_mode=True))
            stem_stride = 4
        else:
            self.conv1 = _conv3x3(in_chans, cfg.stem_width)
            self.maxpool = nn.Identity()
            stem_stride = 1
        self.bn1 = nn.Identity() if preact else nn.BatchNorm2d(cfg.stem_width)
        self.relu = nn.Identity() if preact else nn.ReLU(inplace=True)

        block_attn = attn if not _between_stages(attn) else None
        dpr = drop_path_rates(drop_path_rate, sum(cfg.layers))
        cin, reduction, idx = cfg.stem_width, stem_stride, 0
        stages, stage_attn, info = [], [], []
        for i, (depth, planes) in enumerate(zip(cfg.layers, cfg.widths)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            cout = planes * block.expansion
            kw = dict(attn_kwargs or {})
            if stage_kernels is not None:
                kw["k_size"] = stage_kernels[i]
            blocks = []
            for j in range(depth):
                s = stride if j == 0 else 1
                downsample = None
                if s != 1 or cin != cout:
                    downsample = self._shortcut(cfg, cin, cout, s, preact)
                build = block if make_block is None else partial(make_block, i, j, block)
                blocks.append(build(cin, planes, s, downsample, attn=block_attn, attn_kwargs=kw,
                                    drop_path=dpr[idx], groups=cfg.groups, base_width=cfg.base_width,
                                    stride_in_1x1=stride_in_1x1, block_dropout=block_dropout))
                cin, idx = cout, idx + 1
            stages.append(nn.Sequential(*blocks))
            last = i == len(cfg.layers) - 1
            between = _between_stages(attn) and not last
            stage_attn.append(create_attn(attn, cout, **(attn_kwargs or {})) if between else nn.Identity())
            # ``module`` names the layer whose output is the feature map: BAM's when it follows the stage
            info.append(dict(num_chs=cout, reduction=reduction,
                             module=f"stage_attn.{i}" if between else f"layer{i + 1}"))
        for i, stage in enumerate(stages):
            self.add_module(f"layer{i + 1}", stage)
        self.num_stages = len(stages)
        self.stage_attn = nn.ModuleList(stage_attn)
        self.final_norm = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True)) if preact else nn.Identity()
        self.feature_info = info
        self.num_features = cin
        self.global_pool = self.make_pool(global_pool, num_classes)
        self.fc = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self.pretrained_cfg = dict(cfg.cfg)
        self.init_weights(init)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    @staticmethod
    def _shortcut(cfg, cin, cout, stride, preact):
        if cfg.shortcut == "pad":
            return PadShortcut(cin, cout, stride)
        if preact:
            return nn.Sequential(_conv1x1(cin, cout, stride))
        return nn.Sequential(_conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))

    def init_weights(self, init: str = "authors") -> None:
        """(Re)initialise every parameter by ``init`` (see the class docstring)."""
        if init == "authors" and self.attn in ("bam", "cbam"):
            init_attention_module_cnn(self, self.fc)
        else:
            init_torchvision_cnn(self)

    @property
    def stages(self) -> list[nn.Module]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def forward_stem(self, x):
        check_image(type(self).__name__, x, self.in_chans)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def _stage_outputs(self, x):
        x = self.forward_stem(x)
        for stage, attn in zip(self.stages, self.stage_attn):
            x = attn(self._run(stage, x))
            yield x

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's ResNet grouping (``timm/models/resnet.py``, ``ResNet.group_matcher``): the stem, then each
        block of ``layer1``… (each stage when ``coarse``); BAM and the pre-activation final norm join the
        stage they follow."""
        blocks = r"^layer(\d+)\." if coarse else r"^layer(\d+)\.(\d+)\."
        return dict(stem=r"^conv1\.|^bn1\.",
                    blocks=[(blocks, None), *stage_attn_matchers(range(1, self.num_stages + 1)),
                            (r"^final_norm\.", (MATCH_PREV,))])

    def final_norm_module(self):
        return None if isinstance(self.final_norm, nn.Identity) else self.final_norm

    def _drop_final_norm(self):
        self.final_norm = nn.Identity()

    def _keep_stages(self, n):
        keep_layers(self, n)
        self.stage_attn = self.stage_attn[:n]

    def forward_features(self, x):
        x = self.forward_stem(x)
        for stage, attn in zip(self.stages, self.stage_attn):
            x = attn(self._run(stage, x))
        return self.final_norm(x)

    @staticmethod
    def checkpoint_filter_fn(state_dict, model):
        return convert_official_resnet(state_dict, model)


ECA_KERNEL_RULES = ("checkpoint", "paper")


def _eca_stage_kernels(cfg: ResNetCfg, attn: str | None, attn_kwargs: dict,
                       eca_kernels: str | None) -> tuple[int, ...] | None:
    """The per-stage ECA kernel sizes to impose, or ``None``: each ECA then follows ``attn_kwargs`` (eq. 14
    with its ``gamma``/``b``, or one fixed ``k_size``). See ``eca_kernels`` in :class:`ResNet`."""
    if eca_kernels is None:
        if attn != "eca" or cfg.eca_kernels is None or "k_size" in attn_kwargs:
            return None  # no released kernels, or one fixed kernel asked for every stage
        origin = "eca_kernels=None (the default: 'checkpoint' for the variants with released kernels)"
    else:
        if eca_kernels not in ECA_KERNEL_RULES:
            raise ValueError(f"ResNet: eca_kernels must be None or one of {ECA_KERNEL_RULES}, got {eca_kernels!r}")
        if attn != "eca":
            raise ValueError(f"ResNet: eca_kernels={eca_kernels!r} sets the kernels of ECA attention only, "
                             f"but attn={attn!r}")
        if "k_size" in attn_kwargs:
            raise ValueError(f"ResNet: attn_kwargs k_size={attn_kwargs['k_size']!r} fixes one ECA kernel for every "
                             f"stage, which contradicts eca_kernels={eca_kernels!r}; pass one of the two")
        if eca_kernels == "paper":
            return None
        if cfg.eca_kernels is None:
            raise ValueError("ResNet: eca_kernels='checkpoint' needs the kernel sizes of released ECA checkpoints, "
                             "which exist for resnet18/34/50/101/152_eca only; use eca_kernels='paper' (eq. 14)")
        origin = "eca_kernels='checkpoint'"
    given = sorted({"gamma", "b"} & set(attn_kwargs))
    if given:
        raise ValueError(f"ResNet: attn_kwargs sets {' and '.join(given)} (eq. 14's kernel rule), but {origin} uses "
                         f"the released per-stage kernels {cfg.eca_kernels}; pass eca_kernels='paper' to use eq. 14")
    return cfg.eca_kernels


# -- the authors' checkpoints ------------------------------------------------------------------

def convert_official_resnet(state_dict: dict, model: ResNet) -> dict:
    """The authors' BAM/CBAM ``ResidualNet`` and ECA-ResNet keys → ours.

    Their ResNet part already follows torchvision; only the attention modules are named
    differently (``layerX.Y.cbam|eca.*`` and ``bamN.*``), and each of our layers converts its
    own keys. An official BAM checkpoint computes σ(M_c · M_s): it loads only into a model
    built with ``attn_kwargs=dict(combine="product")``.
    """
    if any(k.startswith("layer0.") or re.search(r"\.se(_module)?\.", k) for k in state_dict):
        state_dict = convert_timm_resnet(state_dict, model)
    out = {}
    for key, value in state_dict.items():
        block = re.match(r"^(layer\d+\.\d+)\.(?:cbam|eca)\.(.*)$", key)
        stage = re.match(r"^bam(\d+)\.(.*)$", key)
        if block:
            path, rest = f"{block[1]}.attn", block[2]
        elif stage:
            path, rest = f"stage_attn.{int(stage[1]) - 1}", stage[2]
        else:
            out[key] = value
            continue
        try:
            layer = model.get_submodule(path)
        except AttributeError:
            layer = None
        convert = getattr(layer, "convert_official_key", None)
        if convert is None:
            kind = "BAM" if stage else key.split(".")[2].upper()
            raise ValueError(f"load_checkpoint: the checkpoint holds {kind} modules ({key!r}) but "
                             f"{type(model).__name__} has no attention module at {path!r}; "
                             f"build the *_{kind.lower()} model")
        if isinstance(layer, BAM) and layer.combine != "product":
            raise ValueError(OFFICIAL_BAM_NEEDS_PRODUCT)
        out[f"{path}.{convert(rest)}"] = value
    return out


# timm/models/senet.py (``legacy_*``, Cadene's port of the SENet authors' Caffe models) → torchvision names
_TIMM_LEGACY_RULES = [(r"^layer0\.(conv1|bn1)\.", r"\1."), (r"^last_linear\.", "fc."), (r"\.se_module\.", ".se.")]


def convert_timm_resnet(state_dict: dict, model: ResNet) -> dict:
    """timm's SE-ResNet keys → ours.

    timm/models/resnet.py (``seresnet50``, ...) follows torchvision and puts ``SEModule`` at
    ``layerX.Y.se``, after ``bn3`` and before the addition as we do, with 1×1 convolutions for
    the two fully connected layers (``fc1``, ``fc2``: the same weights, two trailing unit dims).
    timm/models/senet.py (``legacy_seresnet*``, ``legacy_seresnext*``) adds ``layer0.`` to the
    stem, calls the SE ``se_module`` and the classifier ``last_linear``; its SE-ResNet
    bottlenecks stride in the first 1×1 conv and its stem pools with ``ceil_mode=True`` and no
    padding (the Caffe layout), so they load only into a model built with ``stride_in_1x1=True``
    (bottlenecks without groups) and ``stem_pool="ceil"``. Its basic blocks (``legacy_seresnet18/34``)
    apply a ReLU before the SE and are refused, as are timm's ResNet-D/T/light layouts (the
    ``ecaresnet*`` models): their stems and shortcuts are not ours.
    """
    name = type(model).__name__
    if any(k.startswith("conv1.0.") or re.search(r"\.downsample\.2\.", k) for k in state_dict):
        raise ValueError("load_checkpoint: the checkpoint is a timm ResNet-D/T or ResNet-light layout (ecaresnet*d, "
                         "*t, ecaresnetlight, seresnet*d): a deep stem of three 3×3 convs (conv1.0 ...) or average-"
                         "pool shortcuts (downsample.0 AvgPool2d, .1 conv, .2 BN), which our ResNets do not have")
    if any(k.startswith("layer0.") for k in state_dict):
        pool = getattr(model, "maxpool", None)
        if not (isinstance(pool, nn.MaxPool2d) and pool.ceil_mode):
            raise ValueError(f"load_checkpoint: the checkpoint is timm's legacy SENet layout, whose stem pools "
                             f"with ceil_mode=True and no padding; build {name} with stem_pool='ceil'")
        if "layer1.0.conv3.weight" not in state_dict:
            raise ValueError("load_checkpoint: timm's legacy_seresnet18/34 are not our resnet18_se/resnet34_se: "
                             "their SEResNetBlock applies a ReLU after bn2, before the SE (the SE paper's Fig. 3 "
                             "and our blocks have none there), so the same weights give other outputs")
        conv2 = state_dict.get("layer1.0.conv2.weight")
        if conv2 is not None and conv2.shape[0] == conv2.shape[1]:  # a bottleneck without groups: SE-ResNet
            first = getattr(model.get_submodule("layer2.0"), "conv1", None)
            if first is None or first.stride != (2, 2):
                raise ValueError(f"load_checkpoint: the checkpoint is timm's legacy SE-ResNet, whose bottlenecks "
                                 f"stride in their first 1×1 conv; build {name} with stride_in_1x1=True")
        state_dict = remap_keys(state_dict, _TIMM_LEGACY_RULES)
    out = {}
    for key, value in state_dict.items():
        se = re.match(r"^(layer\d+\.\d+)\.se\.(.*)$", key)
        if se:
            kind = "eca" if se[2] == "conv.weight" else "se"  # timm names any block attention ``se``
            if model.attn != kind:
                raise ValueError(f"load_checkpoint: the checkpoint holds {kind.upper()} modules ({key!r}) but {name} "
                                 f"has attn={model.attn!r}; build the *_{kind} model")
            key = f"{se[1]}.attn.{se[2]}"
            if se[2].endswith("weight") and value.dim() == 4:  # a 1×1 conv is the fully connected layer
                value = value.flatten(1)
        out[key] = value
    return out


# -- variants ---------------------------------------------------------------------------------

_PAPERS = {
    "resnet": "He et al., Deep Residual Learning for Image Recognition, CVPR 2016",
    "preresnet": "He et al., Identity Mappings in Deep Residual Networks, ECCV 2016",
    "wide_resnet": "Zagoruyko and Komodakis, Wide Residual Networks, BMVC 2016",
    "resnext": "Xie et al., Aggregated Residual Transformations for Deep Neural Networks, CVPR 2017",
    "se": "Hu et al., Squeeze-and-Excitation Networks, CVPR 2018",
    "eca": "Wang et al., ECA-Net: Efficient Channel Attention for Deep CNNs, CVPR 2020",
    "bam": "Park et al., BAM: Bottleneck Attention Module, BMVC 2018",
    "cbam": "Woo et al., CBAM: Convolutional Block Attention Module, ECCV 2018",
}
_CIFAR: dict[str, Any] = dict(input_size=(3, 32, 32), mean=CIFAR_MEAN, std=CIFAR_STD, crop_pct=1.0, num_classes=10)

RESNET_CFGS: dict[str, ResNetCfg] = {
    "resnet18": ResNetCfg("basic", (2, 2, 2, 2), eca_kernels=(3, 5, 7, 7)),
    "resnet34": ResNetCfg("basic", (3, 4, 6, 3), eca_kernels=(3, 3, 5, 7)),
    "resnet50": ResNetCfg("bottleneck", (3, 4, 6, 3), eca_kernels=(3, 5, 5, 7)),
    "resnet101": ResNetCfg("bottleneck", (3, 4, 23, 3), eca_kernels=(3, 3, 5, 7)),
    "resnet152": ResNetCfg("bottleneck", (3, 8, 36, 3), eca_kernels=(3, 3, 5, 7)),
    "resnext50_32x4d": ResNetCfg("bottleneck", (3, 4, 6, 3), groups=32, base_width=4),
    "resnext101_32x4d": ResNetCfg("bottleneck", (3, 4, 23, 3), groups=32, base_width=4),
    # the CBAM paper's "WideResNet18 (widen=1.5 / 2.0)": ResNet-18 with every stage widened, the stem kept
    "wide_resnet18_1_5": ResNetCfg("basic", (2, 2, 2, 2), widths=(96, 192, 384, 768)),
    "wide_resnet18_2": ResNetCfg("basic", (2, 2, 2, 2), widths=(128, 256, 512, 1024)),
    "wide_resnet16_8": ResNetCfg("preact_basic", (2, 2, 2), widths=(128, 256, 512), stem="cifar", stem_width=16),
    "wide_resnet28_8": ResNetCfg("preact_basic", (4, 4, 4), widths=(128, 256, 512), stem="cifar", stem_width=16),
    "wide_resnet28_10": ResNetCfg("preact_basic", (4, 4, 4), widths=(160, 320, 640), stem="cifar",
                                  stem_width=16),
    # Xie et al.'s CIFAR ResNeXt-29 (8×64d): 3×3 stem of 64, three stages of three bottlenecks
    "resnext29_8x64d": ResNetCfg("bottleneck", (3, 3, 3), widths=(64, 128, 256), stem="cifar", stem_width=64,
                                 groups=8, base_width=64),
    "preresnet110": ResNetCfg("preact_basic", (18, 18, 18), widths=(16, 32, 64), stem="cifar", stem_width=16),
    **{f"resnet{d}": ResNetCfg("basic", ((d - 2) // 6,) * 3, widths=(16, 32, 64), stem="cifar", stem_width=16,
                               shortcut="pad")
       for d in (20, 32, 44, 56, 110)},
}


# The papers' reported (parameters, multiply-adds) at 1000 classes, 224×224 (CIFAR: 10 classes, 32×32).
# CBAM paper Table 4 (the 1×1-stride layout, 3.858 G for ResNet-50; its ResNeXt-101 and WideResNet-18
# rows too); BAM paper Table 3; SE paper
# Table 2; ECA paper Table 2 (reported in units of 2^20 parameters and 2^30 MACs of the torchvision
# layout); He et al. Table 6; Zagoruyko and Komodakis Table 4; Xie et al. Table 7 (CIFAR). None when the
# paper gives no number.
_M, _G, _MI, _GI = 1e6, 1e9, 2 ** 20, 2 ** 30
PAPER_NUMBERS: dict[str, tuple[float | None, float | None]] = {
    "resnet18": (11.69 * _M, 1.814 * _G), "resnet18_se": (11.78 * _M, 1.814 * _G),
    "resnet18_cbam": (11.78 * _M, 1.815 * _G), "resnet18_eca": (11.15 * _MI, 1.70 * _GI),
    "resnet34": (21.80 * _M, 3.664 * _G), "resnet34_se": (21.96 * _M, 3.664 * _G),
    "resnet34_cbam": (21.96 * _M, 3.665 * _G), "resnet34_eca": (20.79 * _MI, 3.43 * _GI),
    "resnet50": (25.56 * _M, 3.858 * _G), "resnet50_se": (28.09 * _M, 3.860 * _G),
    "resnet50_cbam": (28.09 * _M, 3.864 * _G), "resnet50_bam": (25.92 * _M, 3.94 * _G),
    "resnet50_eca": (24.37 * _MI, 3.86 * _GI),
    "resnet101": (44.55 * _M, 7.570 * _G), "resnet101_se": (49.33 * _M, 7.575 * _G),
    "resnet101_cbam": (49.33 * _M, 7.581 * _G), "resnet101_bam": (44.91 * _M, 7.65 * _G),
    "resnet101_eca": (42.49 * _MI, 7.35 * _GI),
    "resnet152": (60.19 * _M, 11.30 * _G), "resnet152_se": (66.77 * _M, 11.32 * _G),
    "resnet152_eca": (57.40 * _MI, 10.83 * _GI),
    "resnext50_32x4d": (25.03 * _M, 3.768 * _G), "resnext50_32x4d_se": (27.56 * _M, 3.771 * _G),
    "resnext50_32x4d_cbam": (27.56 * _M, 3.774 * _G),
    "resnext101_32x4d": (44.18 * _M, 7.508 * _G), "resnext101_32x4d_se": (48.96 * _M, 7.512 * _G),
    "resnext101_32x4d_cbam": (48.96 * _M, 7.519 * _G),
    "wide_resnet18_1_5": (25.88 * _M, 3.866 * _G), "wide_resnet18_1_5_se": (26.07 * _M, 3.867 * _G),
    "wide_resnet18_1_5_cbam": (26.08 * _M, 3.868 * _G),
    "wide_resnet18_2": (45.62 * _M, 6.696 * _G), "wide_resnet18_2_se": (45.97 * _M, 6.696 * _G),
    "wide_resnet18_2_cbam": (45.97 * _M, 6.697 * _G),
    "resnet20": (0.27 * _M, None), "resnet32": (0.46 * _M, None), "resnet44": (0.66 * _M, None),
    "resnet56": (0.85 * _M, None), "resnet110": (1.7 * _M, None), "preresnet110": (1.7 * _M, None),
    "wide_resnet28_10": (36.5 * _M, None), "wide_resnet16_8": (11.0 * _M, None), "resnext29_8x64d": (34.4 * _M, None),
}


def attn_paper(attn: str) -> str:
    """The paper of a built-in attention kind; a kind registered with ``register_attn`` is named as such."""
    return _PAPERS.get(attn) or f"attention kind {attn!r} (registered with attnvision.register_attn)"


def _paper_key(base: str) -> str:
    for key in ("preresnet", "wide_resnet", "resnext"):
        if base.startswith(key):
            return key
    return "resnet"


def _variant_cfg(base: str, attn: str | None) -> ResNetCfg:
    cfg = RESNET_CFGS[base]
    paper = _PAPERS[_paper_key(base)] + (f"; {attn_paper(attn)}" if attn else "")
    extra: dict[str, Any] = dict(_CIFAR) if cfg.stem == "cifar" else {}
    name = base if attn is None else f"{base}_{attn}"
    extra["paper_params"], extra["paper_macs"] = PAPER_NUMBERS.get(name, (None, None))
    return replace(cfg, cfg=make_cfg(paper=paper, **extra))


for _base in RESNET_CFGS:
    for _attn in (None, *ATTN_KINDS):
        register_variant(_base + (f"_{_attn}" if _attn else ""),
                         partial(lambda n, c, base, attn, **kw: ResNet(_variant_cfg(base, attn), n, c, attn=attn, **kw),
                                 base=_base, attn=_attn),
                         f"{_base} " + (f"with {_attn.upper()} attention." if _attn else "without attention."))


# -- published weights ------------------------------------------------------------------------
# One list per model, the default tag first: the weights whose network is ours exactly, built with
# the default arguments, and whose training is closest to the paper's (torchvision's V1 recipe for
# the plain ResNets; for resnet50_se timm's ra2 weights, since the SE authors' own (legacy_in1k) need
# the Caffe layout, stride_in_1x1=True and stem_pool="ceil"; for resnet101/152_se these are the only
# weights, and pretrained=True builds that layout). Values are the publishers' (see each evidence).

_TIMM = "github.com/huggingface/pytorch-image-models@aa4b5850c1543fa488abf260f18390eda46cf85d"
_TIMM_RESULTS = f"{_TIMM} results/results-imagenet.csv (timm's own evaluation)"
_TV = "pypi:torchvision==0.29.1 (wheel)"
_ECA_AUTHORS = "github.com/BangguWu/ECANet@b332f6b3e6e2afe8a3287dc8ee8440a0fbec74c4"
_TORCHVISION_EVAL: dict[str, Any] = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.875, interpolation="bilinear")
# torchvision's V2 weights are evaluated after a resize to 232 and a 224 centre crop (224/232)
_TORCHVISION_V2_EVAL: dict[str, Any] = dict(_TORCHVISION_EVAL, crop_pct=0.9655)
# timm's ResNet Strikes Back weights: 224 at crop 0.95, bicubic; their better test size is 288 at crop 1.0
_RSB_EVAL: dict[str, Any] = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.95, interpolation="bicubic",
                                 test_input_size=(3, 288, 288), test_crop_pct=1.0)
_RSB_URL = "https://github.com/{org}/pytorch-image-models/releases/download/v0.1-rsb-weights/{file}"
_LEGACY_SE = dict(stride_in_1x1=True, stem_pool="ceil")  # the SE authors' Caffe layout (timm's senet.py)


def _torchvision(model: str, tag: str, file: str, top1: float, sha256: str | None = None) -> WeightsCfg:
    """torchvision's weights (keys equal ours), also on the Hub as timm's safetensors copy of the same tensors."""
    version = "IMAGENET1K_V2" if tag == "tv2_in1k" else "IMAGENET1K_V1"
    return WeightsCfg(
        tag=tag, hf_hub_id=f"timm/{model}.{tag}", hf_hub_filename="model.safetensors",
        url=f"https://download.pytorch.org/models/{file}", url_sha256=file.rsplit("-", 1)[1].split(".")[0],
        sha256=sha256, top1=top1, license="bsd-3-clause", source="attnvision",
        evidence=((f"{_TV} torchvision/models/resnet.py ResNet{model[6:]}_Weights.{version} (url, acc@1, "
                   f"check_hash=True) and transforms/_presets.py ImageClassification"),
                  f"{_TIMM} timm/models/resnet.py default_cfgs['{model}.{tag}'] (hf_hub_id, license)"),
        **(_TORCHVISION_V2_EVAL if tag == "tv2_in1k" else _TORCHVISION_EVAL))


def _rsb(model: str, tag: str, org: str, file: str, top1: float, sha256: str | None = None) -> WeightsCfg:
    """timm's ResNet Strikes Back weights (Wightman et al. 2021): torchvision's keys."""
    return WeightsCfg(
        tag=tag, hf_hub_id=f"timm/{model}.{tag}", hf_hub_filename="model.safetensors",
        url=_RSB_URL.format(org=org, file=file), sha256=sha256, top1=top1, license="apache-2.0", source="attnvision",
        evidence=(f"{_TIMM} timm/models/resnet.py default_cfgs['{model}.{tag}'] (_rcfg)", _TIMM_RESULTS),
        notes="top-1 at 224 (crop 0.95); timm reports more at its test size 288 (crop 1.0)", **_RSB_EVAL)


def _legacy_se(model: str, file: str, top1: float) -> WeightsCfg:
    """Cadene's port of the SE authors' Caffe models, as timm's ``legacy_seresnet*`` (URL only)."""
    timm_name = model.replace("resnet", "legacy_seresnet").removesuffix("_se")
    return WeightsCfg(
        tag="legacy_in1k",
        url=f"https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-cadene/{file}",
        top1=top1, license="apache-2.0", source="official", model_kwargs=_LEGACY_SE,
        evidence=((f"{_TIMM} timm/models/senet.py default_cfgs['{timm_name}.in1k'] (_cfg: 0.875, bilinear) and "
                   f"SENet.__init__ (pool0 = MaxPool2d(3, 2, ceil_mode=True))"), _TIMM_RESULTS),
        notes="the SE authors' weights (Hu et al.), converted from Caffe; no checksum is published",
        **_TORCHVISION_EVAL)


def _eca_authors(model: str, drive_id: str, label: str, top1: float) -> WeightsCfg:
    """The ECA authors' checkpoints (BangguWu/ECANet): Google Drive only."""
    return WeightsCfg(
        tag="eca_authors_in1k", page=f"https://drive.google.com/open?id={drive_id}", top1=top1, license="mit",
        source="official",
        evidence=(f"{_ECA_AUTHORS} README.md (ImageNet table, link '{label}'), LICENSE",
                  "github.com/BangguWu/ECANet main.py (Resize 256, CenterCrop 224)"),
        notes=f"the README's '{label}'; a BaiduDrive mirror is listed there too; no checksum is published",
        **_TORCHVISION_EVAL)


def _attention_module_authors(kind: str, drive_id: str, top1: float, **kwargs) -> WeightsCfg:
    """The BAM/CBAM authors' checkpoints (Jongchan/attention-module): Google Drive only."""
    return WeightsCfg(
        tag=f"{kind}_authors_in1k", page=f"https://drive.google.com/file/d/{drive_id}/view?usp=sharing", top1=top1,
        license="mit", source="official",
        evidence=(("github.com/Jongchan/attention-module@459efad0e05ee7dde50c41ca10a3d0800bc3792a README.md "
                   "(ACC@1), LICENSE, train_imagenet.py (Scale 256, CenterCrop 224)"),),
        notes="no checksum is published", **_TORCHVISION_EVAL, **kwargs)


PRETRAINED = {
    "resnet18": [
        _torchvision("resnet18", "tv_in1k", "resnet18-f37072fd.pth", 69.758,
                     sha256="694f673df6520a3158624e8a89af086f59923ee4cd7436fe5bc3bc71d295ad81"),
        _rsb("resnet18", "a1_in1k", "huggingface", "resnet18_a1_0-d63eafa0.pth", 71.504,
             sha256="80c49dee3da4822c009c5a7fe591e9223c5a2cfcf95a4067ca4dfb5a7b89c612"),
    ],
    "resnet34": [
        _torchvision("resnet34", "tv_in1k", "resnet34-b627a593.pth", 73.314),
        _rsb("resnet34", "a1_in1k", "huggingface", "resnet34_a1_0-46f8f793.pth", 76.42),
    ],
    "resnet50": [
        _torchvision("resnet50", "tv_in1k", "resnet50-0676ba61.pth", 76.13,
                     sha256="5d061a3c593d795bfe682d9b152bafbcf550579873492def3515b46db1189888"),
        _torchvision("resnet50", "tv2_in1k", "resnet50-11ad3fa6.pth", 80.858),
        _rsb("resnet50", "a1_in1k", "rwightman", "resnet50_a1_0-14fe96d1.pth", 80.382,
             sha256="773525d5821de224f8f30c33377b7a795d7863e08522698200d3217d3f2a41bb"),
    ],
    "resnet101": [
        _torchvision("resnet101", "tv_in1k", "resnet101-63fe2227.pth", 77.374),
        _torchvision("resnet101", "tv2_in1k", "resnet101-cd907fc2.pth", 81.886),
        _rsb("resnet101", "a1h_in1k", "rwightman", "resnet101_a1h-36d3f2aa.pth", 81.95),
        _rsb("resnet101", "a1_in1k", "huggingface", "resnet101_a1_0-cdcb52a9.pth", 81.494),
    ],
    "resnet152": [
        _torchvision("resnet152", "tv_in1k", "resnet152-394f9c45.pth", 78.312),
        _torchvision("resnet152", "tv2_in1k", "resnet152-f82ba261.pth", 82.284),
        _rsb("resnet152", "a1h_in1k", "rwightman", "resnet152_a1h-dc400468.pth", 82.818),
        _rsb("resnet152", "a1_in1k", "huggingface", "resnet152_a1_0-2eee8a7a.pth", 81.998),
    ],
    "resnet50_se": [
        WeightsCfg(tag="ra2_in1k", hf_hub_id="timm/seresnet50.ra2_in1k", hf_hub_filename="model.safetensors",
                   url="https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"
                       "seresnet50_ra_224-8efdb4bb.pth",
                   top1=80.26, license="apache-2.0", source="official", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   crop_pct=0.875, interpolation="bicubic", test_input_size=(3, 288, 288), test_crop_pct=0.95,
                   evidence=(f"{_TIMM} timm/models/resnet.py default_cfgs['seresnet50.ra2_in1k'] (_ttcfg)",
                             _TIMM_RESULTS),
                   notes="trained in timm (RandAugment recipe), not by the SE authors"),
        WeightsCfg(tag="a1_in1k", hf_hub_id="timm/seresnet50.a1_in1k", hf_hub_filename="model.safetensors",
                   url=_RSB_URL.format(org="huggingface", file="seresnet50_a1_0-ffa00869.pth"),
                   top1=80.012, license="apache-2.0", source="official",
                   evidence=(f"{_TIMM} timm/models/resnet.py default_cfgs['seresnet50.a1_in1k'] (_rcfg)",
                             _TIMM_RESULTS), **_RSB_EVAL),
        _legacy_se("resnet50_se", "se_resnet50-ce0d4300.pth", 77.65),
    ],
    "resnet101_se": [_legacy_se("resnet101_se", "se_resnet101-7e38fcc6.pth", 78.37)],
    "resnet152_se": [_legacy_se("resnet152_se", "se_resnet152-d17c99b7.pth", 78.662)],
    "resnet18_eca": [_eca_authors("resnet18_eca", "1LMRFRTyzVifGBi2MUpTuYEWW44S8mwyl", "eca_resnet18_k3577", 70.92)],
    "resnet34_eca": [_eca_authors("resnet34_eca", "15LV5Jkea3GPzvLP5__H7Gg88oNQUxBDE", "eca_resnet34_k3357", 74.21)],
    "resnet50_eca": [_eca_authors("resnet50_eca", "1670rce333c_lyMWFzBlNZoVUvtxbCF_U", "eca_resnet50_k3557", 77.42)],
    "resnet101_eca": [_eca_authors("resnet101_eca", "1b5FQ8yDFnZ_UhvWT9txmjI_LjbKkgnvC", "eca_resnet101_k3357",
                                   78.65)],
    "resnet152_eca": [_eca_authors("resnet152_eca", "1_bYnaOg9ptsILC_iC7uQ5Izv-u2rjYG5", "eca_resnet152_k3357",
                                   78.92)],
    "resnet50_cbam": [_attention_module_authors("cbam", "1mvAVvhLR_2XY_bPYxh-SEz4vDmGzSArO", 77.622)],
    # the authors' BAM computes σ(M_c · M_s) (see OFFICIAL_BAM_NEEDS_PRODUCT)
    "resnet50_bam": [_attention_module_authors("bam", "1auVf70gfL0ol40bvaX5rlbpn9cKIxhAL", 76.86,
                                               model_kwargs=dict(attn_kwargs=dict(combine="product")))],
}
register_weights(PRETRAINED)
