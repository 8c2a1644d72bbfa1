"""Detectors on torchvision's own heads: ``create_detector(arch, backbone, num_classes)``.

The models returned are ``torchvision.models.detection.FasterRCNN`` (Ren et al., 2015),
``MaskRCNN`` (He et al., 2017), ``RetinaNet`` (Lin et al., 2017) and ``FCOS`` (Tian et al., 2019)
instances, with torchvision's losses, anchor generators, box coders, post-processing and its
``forward(images, targets)`` contract (train: a dict of losses; eval: one dict of ``boxes``,
``scores``, ``labels`` (and ``masks``) per image). Only the backbone is ours: any attnvision model
through :class:`~attnvision.dense.backbone.FeaturePyramidBackbone`.

Anchors are sized from the feature strides with torchvision's ResNet-50 rules, so that ResNet-50
gives torchvision's own detectors exactly (``torchvision/models/detection/faster_rcnn.py``
``_default_anchorgen``, ``retinanet.py`` ``_default_anchorgen``, ``fcos.py`` ``fcos_resnet50_fpn``):

- Faster/Mask R-CNN: stages of strides 4…32 and a max-pooled level (stride 64), one anchor size
  ``8 × stride`` per level (32…512) and aspect ratios 0.5, 1, 2;
- RetinaNet: P3–P5 and P6/P7 from P5 (``LastLevelP6P7(256, 256)``), sizes ``4 × stride × 2^{0, 1/3, 2/3}``
  (32…512) and ratios 0.5, 1, 2;
- FCOS: the same levels, one anchor of size ``stride`` (8…128), ratio 1.

``num_classes`` counts the background, as in torchvision: labels run from 1 to ``num_classes - 1``.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from .._suggest import unknown_name_error
from .backbone import FeaturePyramidBackbone, build_body, freeze_batchnorm, freeze_stages

ARCHS = ("fasterrcnn", "maskrcnn", "retinanet", "fcos")
_ONE_STAGE = ("retinanet", "fcos")


def _anchor_generator(arch: str, strides: list[int]) -> AnchorGenerator:
    sizes: tuple[tuple[int, ...], ...]
    ratios: tuple[tuple[float, ...], ...]
    if arch == "retinanet":
        sizes = tuple((4 * s, int(4 * s * 2 ** (1 / 3)), int(4 * s * 2 ** (2 / 3))) for s in strides)
        ratios = ((0.5, 1.0, 2.0),) * len(strides)
    elif arch == "fcos":
        sizes, ratios = tuple((s,) for s in strides), ((1.0,),) * len(strides)
    else:
        sizes, ratios = tuple((8 * s,) for s in strides), ((0.5, 1.0, 2.0),) * len(strides)
    return AnchorGenerator(sizes, ratios)


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"create_detector: {name} must be an integer >= {low}, got {value!r}")


def create_detector(arch: str, backbone, num_classes: int, *, out_indices=None, trainable_stages: int | None = None,
                    frozen_bn: bool | None = None, pretrained_backbone=None, min_size: int = 800,
                    max_size: int = 1333, fpn_channels: int = 256, box_head_width: int = 1024, image_mean=None,
                    image_std=None, backbone_kwargs: Mapping | None = None, **detector_kwargs) -> nn.Module:
    """A torchvision detector of ``arch`` on the attnvision ``backbone``.

    Args:
        arch: "fasterrcnn", "maskrcnn", "retinanet" or "fcos".
        backbone: a registered name, ``timm:NAME``, ``torchvision:NAME`` or a built model (attached ones too).
        num_classes: classes including the background (torchvision's convention).
        out_indices: backbone stages fed to the FPN (default: the last four for two-stage detectors,
            the last three for RetinaNet/FCOS, as torchvision's ResNet-50 detectors).
        trainable_stages: stages left trainable from the last one (default, as torchvision: 3 with a
            pretrained backbone, all — stages + 1, the stem included — without).
        frozen_bn: BatchNorm as ``FrozenBatchNorm2d`` (default: with a pretrained backbone, as torchvision).
        pretrained_backbone: a local checkpoint for the backbone (its classifier is dropped).
        min_size, max_size: ``GeneralizedRCNNTransform``'s resizing of the shorter/longer side.
        fpn_channels: the FPN's width (256 in the papers). FCOS: a multiple of 32, the groups of its head's
            ``GroupNorm(32, fpn_channels)``; at 32 a group is one channel, which the 1×1 P7 map of a one-image
            training batch (an image of at most 128 px) cannot normalise, so keep 64 or more for small images.
        box_head_width: width of the two-stage detectors' two-layer box head (1024, torchvision's
            ``TwoMLPHead``); smaller for quick experiments.
        image_mean, image_std: normalisation inside the detector (default: the backbone's ``pretrained_cfg``,
            else ImageNet's).
        backbone_kwargs: passed to ``create_model`` for the backbone.
        **detector_kwargs: passed to the torchvision class (``box_score_thresh``, ``detections_per_img``, ...).
    """
    if arch not in ARCHS:
        raise unknown_name_error("create_detector (arch)", arch, ARCHS)
    _check_int("num_classes", num_classes, 2)
    _check_int("min_size", min_size, 1)
    _check_int("max_size", max_size, min_size)
    _check_int("box_head_width", box_head_width, 1)
    _check_int("fpn_channels", fpn_channels, 1)
    if arch == "fcos" and fpn_channels % 32:
        raise ValueError(f"create_detector: FCOS's head normalises with GroupNorm(32, fpn_channels), so fpn_channels "
                         f"must be a multiple of 32, got {fpn_channels}")
    pretrained = pretrained_backbone is not None
    body, stages = build_body(backbone, out_indices=out_indices, last=3 if arch in _ONE_STAGE else 4,
                              pretrained_backbone=pretrained_backbone, **dict(backbone_kwargs or {}))
    if frozen_bn if frozen_bn is not None else pretrained:
        freeze_batchnorm(body)
    freeze_stages(body, stages, trainable_stages if trainable_stages is not None else
                  (min(3, len(stages) + 1) if pretrained else len(stages) + 1))
    extra = LastLevelP6P7(fpn_channels, fpn_channels) if arch in _ONE_STAGE else LastLevelMaxPool()
    fpn = FeaturePyramidBackbone(body, fpn_channels, extra)
    cfg = getattr(getattr(body, "model", body), "pretrained_cfg", None) or {}
    mean = list(image_mean or cfg.get("mean") or (0.485, 0.456, 0.406))
    std = list(image_std or cfg.get("std") or (0.229, 0.224, 0.225))
    common = dict(min_size=min_size, max_size=max_size, image_mean=mean, image_std=std, **detector_kwargs)
    anchors = _anchor_generator(arch, fpn.strides)
    if arch == "retinanet":
        model = RetinaNet(fpn, num_classes, anchor_generator=anchors, **common)
    elif arch == "fcos":
        model = FCOS(fpn, num_classes, anchor_generator=anchors, **common)
    else:
        box_pool = MultiScaleRoIAlign(fpn.in_features, output_size=7, sampling_ratio=2)
        common.update(box_head=TwoMLPHead(fpn_channels * 7 * 7, box_head_width),
                      box_predictor=FastRCNNPredictor(box_head_width, num_classes))
        if arch == "fasterrcnn":
            model = FasterRCNN(fpn, None, rpn_anchor_generator=anchors, box_roi_pool=box_pool, **common)
        else:
            mask_pool = MultiScaleRoIAlign(fpn.in_features, output_size=14, sampling_ratio=2)
            model = MaskRCNN(fpn, None, rpn_anchor_generator=anchors, box_roi_pool=box_pool,
                             mask_roi_pool=mask_pool, mask_predictor=MaskRCNNPredictor(256, 256, num_classes), **common)
    model.checkpoint_filter_fn = from_torchvision
    model.arch = arch
    return model


def from_torchvision(state_dict: Mapping[str, torch.Tensor], model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Keys of a torchvision ``*_resnet50_fpn`` detector (``backbone.body.layer1…``, an ``IntermediateLayerGetter``)
    in our layout (``backbone.body.model.layer1…``, the attnvision ResNet inside its feature extractor).

    Heads, RPN and FPN keep their names. Usable as ``load_checkpoint(detector, path, source="official")``.
    """
    out = {}
    for k, v in state_dict.items():
        if k.startswith("backbone.body.") and not k.startswith("backbone.body.model."):
            k = "backbone.body.model." + k[len("backbone.body."):]
        out[k] = v
    return out


def detection_difference(ours: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor]) -> tuple[float, float]:
    """``(largest box difference, largest score difference)`` between two detectors' outputs for one image,
    each of ``ours`` matched to the nearest box of the same label in ``theirs`` (``inf`` when the counts or
    labels differ, or two share a match). Matching, not position: two nearly tied scores may swap places
    when the same sums run in another order (channels-last memory, another CPU)."""
    a, b = ours["boxes"], theirs["boxes"]
    if len(a) != len(b) or not torch.equal(ours["labels"].sort().values, theirs["labels"].sort().values):
        return float("inf"), float("inf")
    if len(a) == 0:
        return 0.0, 0.0
    dist = (a[:, None] - b[None]).abs().amax(-1)                               # (N, N) L∞ between boxes
    dist = dist.masked_fill(ours["labels"][:, None] != theirs["labels"][None], float("inf"))
    nearest, index = dist.min(1)
    if len(index.unique()) != len(index):
        return float("inf"), float("inf")
    return nearest.max().item(), (ours["scores"] - theirs["scores"][index]).abs().max().item()
