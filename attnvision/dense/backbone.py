"""Backbone adapter for dense prediction: any attnvision backbone → a list of stage maps → an FPN.

The body is built with ``create_model(name, features_only=True, out_indices=...)`` (its
``feature_info`` gives each map's channels and reduction); ``timm:NAME`` backbones come from timm's
own ``features_only`` models and ``torchvision:NAME`` ones from
``torchvision.models.feature_extraction.create_feature_extractor`` on the last module of each
resolution; a model already built (for example one retrofitted with :func:`attnvision.attach`) is
wrapped as it is. :class:`FeaturePyramidBackbone` puts ``torchvision.ops.FeaturePyramidNetwork`` on
the body, with the key layout of torchvision's ``BackboneWithFPN`` (``body.*``, ``fpn.*``).

``trainable_stages`` and the frozen BatchNorm follow torchvision's ``_resnet_fpn_extractor``: the
last ``k`` stages stay trainable, the stem and the earlier stages are frozen; with ``k`` equal to
the number of stages plus one everything trains.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock

from ..factory import create_model
from ..models._features import FeatureListNet, resolve_out_indices
from ..weights import load_checkpoint


class SelectedFeatures(nn.Module):
    """``net(x)`` gives every stage's map; keep those of ``out_indices``, described by ``feature_info``."""

    def __init__(self, net: nn.Module, feature_info: list[dict], out_indices: Sequence[int]):
        super().__init__()
        self.net = net
        self.out_indices = tuple(out_indices)
        self.feature_info = [dict(feature_info[i]) for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = self.net(x)
        maps = list(maps.values()) if isinstance(maps, dict) else list(maps)
        return [maps[i] for i in self.out_indices]


def _torchvision_stages(model: nn.Module, name: str) -> tuple[nn.Module, list[dict]]:
    """A feature extractor on the last module of each resolution (``layer1..4`` or ``features.*``)."""
    from torchvision.models.feature_extraction import create_feature_extractor

    names = [n for n in ("layer1", "layer2", "layer3", "layer4") if hasattr(model, n)]
    features = getattr(model, "features", None)
    if not names and isinstance(features, nn.Sequential):
        names = [f"features.{i}" for i in range(len(features))]
    if not names:
        raise ValueError(f"dense backbone: {name} has neither layer1..layer4 nor a features Sequential to take "
                         f"stage outputs from")
    shapes: dict[str, torch.Size] = {}
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, o.shape))
             for n in names]
    size = 224
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    last_of = {}  # reduction -> the last module at that resolution
    for n in names:
        last_of[size // shapes[n][-1]] = n
    info = [dict(num_chs=int(shapes[n][1]), reduction=r, module=n) for r, n in sorted(last_of.items())]
    net = create_feature_extractor(model, return_nodes={d["module"]: str(i) for i, d in enumerate(info)})
    return net, info


def _resolve(name: str, num_stages: int, out_indices) -> tuple[int, ...]:
    return resolve_out_indices(name, num_stages, out_indices)


def build_body(backbone, *, out_indices: Sequence[int] | None = None, last: int = 4,
               pretrained_backbone=None, **model_kwargs) -> tuple[FeatureListNet | SelectedFeatures, list[str]]:
    """The backbone's stage maps as a module returning a list, and the names of all its stages.

    Args:
        backbone: a registered name, ``timm:NAME``, ``torchvision:NAME``, or an ``nn.Module`` with
            ``feature_info`` and ``forward_intermediates`` (any attnvision model, attached or not; its
            classifier is removed in place).
        out_indices: the stages to return (default: the ``last`` ones).
        pretrained_backbone: a local checkpoint for the classifier, loaded before the head is removed.

    Returns:
        ``(body, stage_names)``: ``body(x)`` is a list of NCHW maps, ``body.feature_info`` their
        ``num_chs``/``reduction``; ``stage_names`` are the parameter prefixes of every stage, in order.
    """

    if isinstance(backbone, nn.Module):
        if pretrained_backbone is not None or model_kwargs:
            raise ValueError("dense backbone: pretrained_backbone and model arguments need a backbone name, "
                             "not a built module")
        model, label = backbone, type(backbone).__name__
    elif isinstance(backbone, str):
        label = backbone
        if backbone.startswith("timm:"):
            import timm
            model = None
            net = timm.create_model(backbone[5:], pretrained=False, features_only=True, **model_kwargs)
            if pretrained_backbone is not None:
                raise ValueError("dense backbone: pretrained_backbone is for attnvision and torchvision backbones; "
                                 "timm features_only models load timm checkpoints themselves")
            timm_info = getattr(net, "feature_info")  # timm's FeatureInfo
            info = [dict(num_chs=c, reduction=r, module=m.replace(".", "_")) for c, r, m in
                    zip(timm_info.channels(), timm_info.reduction(), timm_info.module_name())]
        else:
            external = backbone.startswith("torchvision:")
            # our checkpoints load into the feature extractor below, which drops their classifier
            model = create_model(backbone, num_classes=1000 if external else 0,
                                 pretrained=(pretrained_backbone or False) if external else False, **model_kwargs)
            if external:
                net, info = _torchvision_stages(model, backbone)
                model = None
    else:
        raise TypeError(f"dense backbone: expected a model name or an nn.Module, got {type(backbone).__name__}")
    if model is not None:
        if not hasattr(model, "feature_info") or not hasattr(model, "forward_intermediates"):
            raise ValueError(f"dense backbone: {label} does not expose stage outputs (feature_info and "
                             f"forward_intermediates)")
        model_info = getattr(model, "feature_info")  # any such model: ours, attached or not
        n = len(model_info)
        idx = _resolve(label, n, out_indices if out_indices is not None else range(max(0, n - last), n))
        stage_names = [d["module"] for d in model_info]
        body = FeatureListNet(model, idx)
        if pretrained_backbone is not None and isinstance(backbone, str):
            load_checkpoint(body, pretrained_backbone)
        return body, [f"model.{s}" for s in stage_names]
    n = len(info)
    idx = _resolve(label, n, out_indices if out_indices is not None else range(max(0, n - last), n))
    return SelectedFeatures(net, info, idx), [f"net.{d['module']}" for d in info]


def freeze_stages(body: nn.Module, stage_names: Sequence[str], trainable_stages: int) -> None:
    """Freeze every parameter of ``body`` but those of the last ``trainable_stages`` stages
    (``len(stage_names) + 1``: nothing frozen), as torchvision's ``trainable_layers``."""
    n = len(stage_names)
    if (isinstance(trainable_stages, bool) or not isinstance(trainable_stages, int)
            or not 0 <= trainable_stages <= n + 1):
        raise ValueError(f"dense backbone: trainable_stages must be an integer in [0, {n + 1}] for a backbone of "
                         f"{n} stages, got {trainable_stages!r}")
    if trainable_stages == n + 1:
        return
    keep = tuple(f"{s}." for s in stage_names[n - trainable_stages:]) if trainable_stages else ()
    for pname, p in body.named_parameters():
        if not keep or not pname.startswith(keep):
            p.requires_grad_(False)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` by ``torchvision.ops.FrozenBatchNorm2d`` with its statistics and affine."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                if child.affine:
                    frozen.weight.copy_(child.weight)
                    frozen.bias.copy_(child.bias)
                if child.track_running_stats:
                    frozen.running_mean.copy_(child.running_mean)
                    frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen.to(child.weight.device if child.affine else None))
        else:
            freeze_batchnorm(child)
    return module


class FeaturePyramidBackbone(nn.Module):
    """``body`` → ``torchvision.ops.FeaturePyramidNetwork``: an ``OrderedDict`` of ``out_channels`` maps
    named ``"0"``, ``"1"``, … (and the extra block's names), as torchvision's detectors expect.

    ``strides`` lists every output map's stride, extra levels included (a max-pool level or P6/P7
    each halve the resolution again).
    """

    def __init__(self, body: nn.Module, out_channels: int = 256, extra_blocks: ExtraFPNBlock | None = None):
        super().__init__()
        self.body = body
        body_info = getattr(body, "feature_info")  # build_body's, or any body that describes its maps
        in_channels = [d["num_chs"] for d in body_info]
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels
        self.in_features = [str(i) for i in range(len(in_channels))]
        strides = [int(d["reduction"]) for d in body_info]
        extra = {"LastLevelMaxPool": 1, "LastLevelP6P7": 2}.get(type(extra_blocks).__name__, 0)
        self.strides = strides + [strides[-1] * 2 ** (k + 1) for k in range(extra)]

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        maps = self.body(x)
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))
