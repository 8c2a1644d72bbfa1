"""The interface every attnvision classifier honours (timm's), and model metadata helpers."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def make_cfg(*, paper: str, input_size=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
             crop_pct: float = 0.875, **extra) -> dict:
    """``pretrained_cfg``: preprocessing and provenance. ``paper_*`` keys hold the paper's reported numbers."""
    return dict(input_size=tuple(input_size), mean=tuple(mean), std=tuple(std), crop_pct=crop_pct,
                paper=paper, **extra)


class Backbone(nn.Module):
    """The timm interface: ``forward = forward_head ∘ forward_features``.

    Subclasses set ``num_classes``, ``num_features``, ``feature_info``, ``pretrained_cfg``,
    implement ``forward_features``, ``forward_head`` and ``forward_intermediates(x, indices)``,
    and name their classifier's attribute path in ``classifier_path``.
    """

    classifier_path = "head.fc"
    drop_rate: float = 0.0
    num_classes: int
    num_features: int
    pretrained_cfg: dict
    feature_info: list

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool → dropout (``self.drop_rate``) → the classifier; families with another
        head override it."""
        x = x.mean((2, 3))
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.get_classifier()(x)

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.classifier_path)

    def reset_classifier(self, num_classes: int) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"{type(self).__name__}: num_classes must be a non-negative integer, got {num_classes!r}")
        parent_path, _, attr = self.classifier_path.rpartition(".")
        parent = self.get_submodule(parent_path) if parent_path else self
        old = getattr(parent, attr)
        device = old.weight.device if isinstance(old, nn.Linear) else None
        new = nn.Linear(self.num_features, num_classes, device=device) if num_classes > 0 else nn.Identity()
        setattr(parent, attr, new)
        self.num_classes = num_classes


INIT_SCHEMES = ("authors", "torchvision")
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def check_init(model_name: str, init: str) -> str:
    if init not in INIT_SCHEMES:
        raise ValueError(f"{model_name}: init must be one of {INIT_SCHEMES}, got {init!r}")
    return init


def init_torchvision_cnn(model: nn.Module) -> None:
    """torchvision's ResNet initialisation (``torchvision/models/resnet.py``, ``ResNet.__init__``):
    He-normal on fan-out for every 2-D convolution, BatchNorm weight 1 and bias 0; linear layers,
    1-D convolutions and convolution biases keep PyTorch's defaults.

    The authors of ECA-Net do the same (BangguWu/ECANet ``models/eca_resnet.py``, ``ResNet.__init__``:
    N(0, √(2/(k·k·C_out))) for every ``nn.Conv2d``, BN 1 and 0; the ECA ``Conv1d`` and the classifier
    untouched); the SE authors' released networks are Caffe models without an initialiser, and
    SE-ResNets are trained from this one (torchvision, timm)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, _BATCH_NORMS):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_attention_module_cnn(model: nn.Module, classifier: nn.Module) -> None:
    """The initialisation of the BAM and CBAM authors' ResNets (Jongchan/attention-module
    ``MODELS/model_resnet.py``, ``ResNet.__init__``), which sets the entries of the state_dict by
    their key names:

    - a weight whose key holds "conv": He-normal on fan-out. That is every convolution, the
      one-output-channel CBAM 7×7 and BAM final 1×1 included (fan-out 49 and 1), except the
      shortcut projections: their key is ``downsample.0.weight``, so they keep PyTorch's default;
    - a weight whose key holds "bn": 1, except CBAM's spatial-gate BN (key ``SpatialGate...bn``): 0,
      so that M_s starts as the constant σ(0) = 0.5;
    - every bias: 0 (convolutions, linear layers and BNs);
    - the classifier's weight: He-normal on fan-in (``init.kaiming_normal(self.fc.weight)``). The
      linear layers of the attention MLPs keep PyTorch's default weights.
    """
    from ..layers.cbam import CBAMSpatialGate

    shortcut = {id(m) for name, sub in model.named_modules() if name.rpartition(".")[2] == "downsample"
                for m in sub.modules()}
    spatial_bns = {id(m.bn) for m in model.modules() if isinstance(m, CBAMSpatialGate)}
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and id(m) not in shortcut:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, _BATCH_NORMS):
            nn.init.constant_(m.weight, 0.0 if id(m) in spatial_bns else 1.0)
        bias = getattr(m, "bias", None)
        if isinstance(bias, nn.Parameter):
            nn.init.zeros_(bias)
    if isinstance(classifier, nn.Linear):
        nn.init.kaiming_normal_(classifier.weight, mode="fan_in", nonlinearity="relu")


def init_fan_out_trunc_normal(m: nn.Module) -> None:
    """He-normal on fan-out for convolutions, truncated normal (std 0.02) for linear layers, zero
    biases: the initialisation of the authors' VAN (Visual-Attention-Network/VAN-Classification
    ``models/van.py``, ``VAN._init_weights``). Use with ``model.apply``."""
    if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def run_stages(x: torch.Tensor, stages, indices=None, after=None) -> list[torch.Tensor]:
    """Apply ``stages`` in turn (then ``after[i]``, e.g. a between-stage attention, when given) and
    return the outputs at ``indices`` (all stages when None), stopping after the last one asked for."""
    indices = range(len(stages)) if indices is None else indices
    feats, stop = [], max(indices)
    for i, stage in enumerate(stages):
        x = stage(x)
        if after is not None:
            x = after[i](x)
        if i in indices:
            feats.append(x)
        if i == stop:
            break
    return feats


def stage_info(channels, reductions, module_fmt: str) -> list[dict]:
    """``feature_info`` entries for stages of the given widths and strides."""
    return [dict(num_chs=c, reduction=r, module=module_fmt.format(i + 1))
            for i, (c, r) in enumerate(zip(channels, reductions))]


def check_image(model_name: str, x: torch.Tensor, in_chans: int) -> None:
    """Raise unless ``x`` is a (B, in_chans, H, W) tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model_name}: expected an image tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"{model_name}: expected input of shape (B, {in_chans}, H, W), got {tuple(x.shape)}")


def register_variant(name: str, build: Callable[..., nn.Module], doc: str):
    """Register ``name`` as a builder ``(*, num_classes, in_chans, **kwargs) -> build(num_classes, in_chans, **kwargs)``."""

    def builder(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> nn.Module:
        return build(num_classes, in_chans, **kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    return register_model(builder)
