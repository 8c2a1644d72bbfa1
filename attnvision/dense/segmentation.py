"""Semantic segmenters on any attnvision backbone: ``create_segmenter(arch, backbone, num_classes)``.

``forward(images (B, C, H, W)) -> logits (B, num_classes, H, W)``, bilinearly upsampled to the
input resolution. Two heads, the ones the VAN paper reports on ADE20K:

- ``semantic_fpn`` — Kirillov et al., *Panoptic Feature Pyramid Networks*, CVPR 2019, Fig. 3
  (the semantic branch): an FPN (256 channels) on the stages of strides 4…32; each level P_k is
  brought to stride 4 by ``log2(stride_k / 4)`` blocks of [3×3 conv (128), GroupNorm(32), ReLU,
  2× bilinear upsampling] (P2 by one block without upsampling); the levels are summed
  element-wise, a 1×1 conv gives the classes and a 4× bilinear upsampling the input resolution.
- ``upernet`` — Xiao et al., *Unified Perceptual Parsing for Scene Understanding*, ECCV 2018,
  Fig. 3 (the authors' ``UPerNet`` and mmsegmentation's ``UPerHead``): a Pyramid Pooling Module
  (Zhao et al. 2017; bins 1, 2, 3, 6) on the last stage, its output and the stage concatenated and
  fused by a 3×3 conv, used as the top of an FPN (1×1 lateral convs, top-down addition, 3×3 output
  convs, all conv–BN–ReLU, 512 channels); every level upsampled to the finest, concatenated, fused
  by a 3×3 conv, dropout 0.1 and a 1×1 classifier.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import Conv2dNormActivation, FeaturePyramidNetwork

from .._suggest import unknown_name_error
from .backbone import build_body, freeze_batchnorm, freeze_stages

ARCHS = ("semantic_fpn", "upernet")


def _upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SemanticFPNHead(nn.Module):
    """Panoptic FPN's semantic branch (Kirillov et al. 2019, Fig. 3) on an FPN of the backbone's stages."""

    def __init__(self, in_channels: list[int], strides: list[int], num_classes: int, *, fpn_channels: int = 256,
                 channels: int = 128, groups: int = 32):
        super().__init__()
        self.fpn = FeaturePyramidNetwork(in_channels, fpn_channels)
        self.scale_heads = nn.ModuleList()
        for stride in strides:
            steps = max(1, (stride // strides[0]).bit_length() - 1)  # log2(stride / finest) blocks, at least one
            blocks = []
            for k in range(steps):
                blocks.append(Conv2dNormActivation(fpn_channels if k == 0 else channels, channels, 3,
                                                   norm_layer=lambda c: nn.GroupNorm(groups, c)))
                if stride > strides[0]:
                    blocks.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*blocks))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        pyramid = list(self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps))).values())
        out = self.scale_heads[0](pyramid[0])
        for head, p in zip(self.scale_heads[1:], pyramid[1:]):
            out = out + _upsample(head(p), out.shape[-2:])  # exact 2^k already; resize guards odd sizes
        return self.classifier(out)                          # (B, num_classes, H/4, W/4)


def _cbr(cin: int, cout: int, k: int) -> Conv2dNormActivation:
    return Conv2dNormActivation(cin, cout, k, norm_layer=nn.BatchNorm2d, bias=False)


class UperNetHead(nn.Module):
    """UPerNet's head (Xiao et al. 2018, Fig. 3): PPM on the last stage + FPN, fused at the finest level."""

    def __init__(self, in_channels: list[int], num_classes: int, *, channels: int = 512,
                 pool_scales=(1, 2, 3, 6), dropout: float = 0.1):
        super().__init__()
        self.ppm = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(s), _cbr(in_channels[-1], channels, 1))
                                 for s in pool_scales)
        self.bottleneck = _cbr(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral = nn.ModuleList(_cbr(c, channels, 1) for c in in_channels[:-1])
        self.fpn_out = nn.ModuleList(_cbr(channels, channels, 3) for _ in in_channels[:-1])
        self.fuse = _cbr(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        top = maps[-1]
        pooled = [_upsample(branch(top), top.shape[-2:]) for branch in self.ppm]
        laterals = [lat(m) for lat, m in zip(self.lateral, maps[:-1])]
        laterals.append(self.bottleneck(torch.cat([top, *pooled], 1)))
        for i in range(len(laterals) - 1, 0, -1):  # top-down pathway
            laterals[i - 1] = laterals[i - 1] + _upsample(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn_out, laterals[:-1])] + [laterals[-1]]
        size = outs[0].shape[-2:]
        fused = self.fuse(torch.cat([outs[0], *(_upsample(o, size) for o in outs[1:])], 1))
        return self.classifier(self.dropout(fused))           # (B, num_classes, H/4, W/4)


class Segmenter(nn.Module):
    """``body`` (stage maps) → ``head`` → logits at the input resolution."""

    def __init__(self, body: nn.Module, head: nn.Module, num_classes: int):
        super().__init__()
        self.body, self.head, self.num_classes = body, head, num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"Segmenter: expected images of shape (B, C, H, W), got {tuple(images.shape)}")
        return _upsample(self.head(self.body(images)), images.shape[-2:])  # (B, num_classes, H, W)


def create_segmenter(arch: str, backbone, num_classes: int, *, out_indices=None, trainable_stages: int | None = None,
                     frozen_bn: bool = False, pretrained_backbone=None, backbone_kwargs: Mapping | None = None,
                     **head_kwargs) -> Segmenter:
    """A segmenter of ``arch`` ("semantic_fpn" or "upernet") on the attnvision ``backbone``.

    Args:
        num_classes: output classes (the background, if any, is one of them).
        out_indices: backbone stages used (default: the last four).
        trainable_stages, frozen_bn, pretrained_backbone, backbone_kwargs: as :func:`create_detector`
            (default: everything trains, BatchNorm stays trainable).
        **head_kwargs: the head's widths (``fpn_channels``/``channels`` for semantic_fpn,
            ``channels``/``pool_scales``/``dropout`` for upernet).
    """
    if arch not in ARCHS:
        raise unknown_name_error("create_segmenter (arch)", arch, ARCHS)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"create_segmenter: num_classes must be a positive integer, got {num_classes!r}")
    body, stages = build_body(backbone, out_indices=out_indices, pretrained_backbone=pretrained_backbone,
                              **dict(backbone_kwargs or {}))
    if frozen_bn:
        freeze_batchnorm(body)
    freeze_stages(body, stages, len(stages) + 1 if trainable_stages is None else trainable_stages)
    channels = [d["num_chs"] for d in body.feature_info]
    head: nn.Module
    if arch == "semantic_fpn":
        head = SemanticFPNHead(channels, [int(d["reduction"]) for d in body.feature_info], num_classes, **head_kwargs)
    else:
        head = UperNetHead(channels, num_classes, **head_kwargs)
    return Segmenter(body, head, num_classes)
