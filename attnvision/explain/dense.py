"""Grad-CAM for detectors and segmenters: the maps of :mod:`.gradcam` for a dense score.

- A detection (Selvaraju et al.'s recipe with the detection's score as y^c): y = the score of
  detection k (after the detector's post-processing: softmax or sigmoid of its class logit, which
  stays differentiable through torchvision's box selection), α_k and L as in eq. 1–2.
- A segmentation class (Vinogradova et al., "Towards Interpretable Semantic Segmentation via
  Gradient-weighted Class Activation Mapping", AAAI 2020, eq. 1): y^c = Σ_{(i,j)∈M} Y^c_ij, the class-c
  logits summed over the pixel set M (default: the pixels predicted as c; all pixels when there are none).

The layer is the backbone's last stage by default (``"auto"``, from the attnvision backbone's
``feature_info``), or any module name of the detector/segmenter. A detector's maps come back in the
input image's pixels: torchvision resizes the image and pads the batch to a multiple of 32, so the map
is cropped to the resized image before it is resized to the input's size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .gradcam import (_as_maps, _NotRun, cam_from_activations, captured_layer, check_method, layer_gradient,
                      normalize_peak, resolve_layer)


def _body(model: nn.Module) -> tuple[str, nn.Module]:
    """``(prefix, body)``: the backbone feature extractor of a detector (``backbone.body``) or segmenter (``body``)."""
    backbone, body = getattr(model, "backbone", None), getattr(model, "body", None)
    if isinstance(backbone, nn.Module) and hasattr(backbone, "body"):
        return "backbone.body", getattr(backbone, "body")
    if isinstance(body, nn.Module):
        return "body", body
    raise ValueError(f"dense gradcam: {type(model).__name__} is not a detector or segmenter of attnvision.dense "
                     f"(no backbone.body or body); use attnvision.explain.gradcam for classifiers")


def dense_layer(model: nn.Module, layer: str | nn.Module = "auto") -> tuple[str, nn.Module]:
    """The layer to explain: "auto" (the backbone's last stage), a module name or a module of ``model``."""
    if layer != "auto":
        return resolve_layer(model, layer)
    prefix, body = _body(model)
    inner = getattr(body, "model", None)
    info = getattr(inner, "feature_info", None)
    if not info:
        raise ValueError(f"dense gradcam: the backbone of {type(model).__name__} ({type(body).__name__}) names no "
                         f"stages; pass layer='<module name>' (e.g. one of its stage modules)")
    return resolve_layer(model, f"{prefix}.model.{info[-1]['module']}")


def _check_method(who: str, method: str) -> None:
    check_method(who, method)


def detection_cam(detector: nn.Module, image: torch.Tensor, detection: int = 0, layer: str | nn.Module = "auto",
                  method: str = "gradcam", *, normalize: bool = True) -> tuple[torch.Tensor, dict]:
    """Grad-CAM of one detection of ``image``: ``(map (H, W), detections)``.

    Args:
        detector: a torchvision detector (``create_detector``); it runs in eval mode (states restored).
        image: (3, H, W) in [0, 1], as the detector takes it (it normalises and resizes itself).
        detection: which detection to explain, by rank in the detector's output (0: the highest score).
        layer, method, normalize: as :func:`attnvision.explain.gradcam`.

    Returns:
        the map at the image's resolution, and the detections (``boxes``, ``scores``, ``labels``, detached).
    """
    who = "detection_cam"
    _check_method(who, method)
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        raise ValueError(f"{who}: expected one image (3, H, W), got "
                         f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}")
    name, module = dense_layer(detector, layer)
    with captured_layer(detector, name, module) as captured:
        out = detector([image])[0]
        count = len(out["scores"])
        if isinstance(detection, bool) or not isinstance(detection, int) or not 0 <= detection < count:
            raise ValueError(f"{who}: detection must be an index in [0, {count}) (the detector found {count} "
                             f"object(s) above its score threshold), got {detection!r}")
        try:
            act, grad = layer_gradient(name, captured, out["scores"][detection])
        except _NotRun:
            raise ValueError(f"{who}: layer {name!r} did not run in the detector's forward pass") from None
        padded = getattr(detector, "transform")([image.detach()])[0]  # torchvision's GeneralizedRCNNTransform
    act, grad = _as_maps(who, act, grad, padded.tensors.shape[-2:], None)
    cam = cam_from_activations(act, grad, method)                                   # (1, h, w)
    cam = F.interpolate(cam[:, None], size=tuple(padded.tensors.shape[-2:]), mode="bilinear", align_corners=False)
    height, width = padded.image_sizes[0]
    cam = F.interpolate(cam[:, :, :height, :width], size=tuple(image.shape[-2:]), mode="bilinear",
                        align_corners=False)[:, 0]                                  # (1, H, W)
    detections = {k: v.detach() for k, v in out.items()}
    return (normalize_peak(cam) if normalize else cam)[0], detections


def segmentation_cam(segmenter: nn.Module, images: torch.Tensor, target: int, layer: str | nn.Module = "auto",
                     method: str = "gradcam", *, mask: torch.Tensor | None = None,
                     normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM of class ``target`` over a region: ``(maps (B, H, W), logits (B, K, H, W))``.

    Args:
        segmenter: a :class:`attnvision.dense.Segmenter` (``create_segmenter``), run in eval mode.
        images: (B, C, H, W), normalised as the segmenter was trained.
        target: the class whose logits are summed.
        mask: (B, H, W) bool, the pixels M whose logits count (default: those predicted as ``target``,
            every pixel of an image where none is).
        layer, method, normalize: as :func:`attnvision.explain.gradcam`.
    """
    who = "segmentation_cam"
    _check_method(who, method)
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"{who}: expected images (B, C, H, W), got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    num_classes = getattr(segmenter, "num_classes", None)
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < (num_classes or 0):
        raise ValueError(f"{who}: target must be a class in [0, {num_classes}), got {target!r}")
    name, module = dense_layer(segmenter, layer)
    with captured_layer(segmenter, name, module) as captured:
        logits = segmenter(images)                                                  # (B, K, H, W)
        if mask is None:
            mask = logits.argmax(1) == target
            mask = mask | ~mask.flatten(1).any(1)[:, None, None]
        elif mask.shape != (images.shape[0], *images.shape[-2:]):
            raise ValueError(f"{who}: mask must be (B, H, W) = {(images.shape[0], *images.shape[-2:])}, got "
                             f"{tuple(mask.shape)}")
        try:
            act, grad = layer_gradient(name, captured, (logits[:, target] * mask).sum())
        except _NotRun:
            raise ValueError(f"{who}: layer {name!r} did not run in the segmenter's forward pass") from None
    act, grad = _as_maps(who, act, grad, images.shape[-2:], None)
    cam = cam_from_activations(act, grad, method)
    cam = F.interpolate(cam[:, None], size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    return (normalize_peak(cam) if normalize else cam), logits.detach()
