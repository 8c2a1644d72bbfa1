"""Grad-CAM (Selvaraju et al., ICCV 2017) and Grad-CAM++ (Chattopadhay et al., WACV 2018).

For the score y^c of class c (the logit, before softmax) and the activations A^k (k = 1…K
channels, h×w) of a chosen layer, with gradients g^k_ij = ∂y^c/∂A^k_ij:

    Grad-CAM    α^c_k = (1/hw) Σ_ij g^k_ij                                         (eq. 1)
                L^c   = ReLU(Σ_k α^c_k A^k)                                        (eq. 2)
    Grad-CAM++  a^kc_ij = (g^k_ij)² / (2 (g^k_ij)² + Σ_ab A^k_ab (g^k_ij)³)
                w^c_k  = Σ_ij a^kc_ij ReLU(g^k_ij)
                L^c    = ReLU(Σ_k w^c_k A^k)

(Grad-CAM++ in the closed form the paper derives for the exponential of the score, whose
higher derivatives are powers of the first; a^kc_ij = 0 where g^k_ij = 0.)

L^c is upsampled bilinearly to the input resolution. ``layer="auto"`` takes the module that
``model.feature_info[-1]["module"]`` names (the last stage), which every attnvision model
has, so a new family works without code here. A stage whose output is a token sequence
(B, N, C) is laid back on its h×w grid, leading tokens dropped (a class token, or the model's
``num_prefix_tokens``); when the logits read only the class token, the last block's patch tokens
get no gradient, and that block's input is explained instead. A (B, H, W, C) output is
recognised when the feature_info channel count says so. A stage container that the model does
not call itself (it loops over the blocks) is read through the last of its blocks that runs.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._suggest import unknown_name_error
from ..registry import Registry
from ._grid import token_grid, tokens_to_map

METHODS = ("gradcam", "gradcam++")  # the built-in methods (EXPLAIN_METHODS holds every registered one)


def resolve_layer(model: nn.Module, layer: str | nn.Module = "auto") -> tuple[str, nn.Module]:
    """``(name, module)`` of the layer to explain: "auto" (the last stage), a module name, or a module."""
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise ValueError(f"gradcam: the given layer ({type(layer).__name__}) is not a submodule of "
                         f"{type(model).__name__}")
    if not isinstance(layer, str):
        raise TypeError(f"gradcam: layer must be 'auto', a module name or a module, got {type(layer).__name__}")
    name = layer
    if layer == "auto":
        info: Any = getattr(model, "feature_info", None)  # any model's: a wrong one is caught below
        try:
            name = info[-1]["module"]
        except (TypeError, IndexError, KeyError):
            raise ValueError(f"gradcam: {type(model).__name__} has no feature_info naming its last stage; "
                             f"pass layer='<module name>' (a stage whose output is (B, C, H, W) or "
                             f"(B, N, C))") from None
    try:
        return name, model.get_submodule(name)
    except AttributeError:
        raise unknown_name_error(f"gradcam ({type(model).__name__} layer)", name,
                                 [n for n, _ in model.named_modules() if n]) from None


def _check_images(who: str, images) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{who}: expected images as a tensor (B, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{who}: expected images of shape (B, C, H, W), got {tuple(images.shape)}")


def _target_classes(target, logits: torch.Tensor) -> torch.Tensor:
    b, num_classes = logits.shape
    if target is None:
        return logits.argmax(1)
    if isinstance(target, bool):
        raise TypeError(f"gradcam: target must be None, a class index or one index per image, got {target!r}")
    if isinstance(target, int):
        classes = torch.full((b,), target, dtype=torch.long, device=logits.device)
    else:
        classes = torch.as_tensor(target, device=logits.device)
        if classes.dtype.is_floating_point or classes.dtype == torch.bool or classes.shape != (b,):
            raise ValueError(f"gradcam: target must be None, a class index or {b} integer indices (one per "
                             f"image), got {target!r}")
        classes = classes.long()
    if (classes < 0).any() or (classes >= num_classes).any():
        raise ValueError(f"gradcam: target classes must lie in [0, {num_classes}), got {classes.tolist()}")
    return classes


def _as_maps(who: str, act: torch.Tensor, grad: torch.Tensor, image_hw, num_chs, prefix=None):
    """Activations and gradients as (B, K, h, w)."""
    if act.dim() == 3:  # (B, N, C) tokens
        return tokens_to_map(who, act, image_hw, prefix), tokens_to_map(who, grad, image_hw, prefix)
    if act.dim() == 4:
        if num_chs is not None and act.shape[1] != num_chs and act.shape[-1] == num_chs:  # (B, H, W, C)
            return act.permute(0, 3, 1, 2), grad.permute(0, 3, 1, 2)
        return act, grad
    raise ValueError(f"{who}: expected the layer's output as (B, C, H, W) or (B, N, C) tokens, got shape "
                     f"{tuple(act.shape)}; choose another layer")


class _NotRun(Exception):
    """The layer was not called: a container whose parent calls its children one by one."""


def _last_child_run(model, images, name, module) -> tuple[str, nn.Module]:
    """The direct child of ``module`` called last in a forward pass (a stage whose blocks the model
    iterates itself gives its output through its last block)."""
    order = []
    handles = [child.register_forward_hook(lambda mod, args, out, n=n: order.append(n))
               for n, child in module.named_children()]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    if not order:
        raise ValueError(f"gradcam: layer {name!r} (and every module in it) did not run in the forward pass; "
                         f"choose another layer")
    return f"{name}.{order[-1]}", module.get_submodule(order[-1])


@contextlib.contextmanager
def captured_layer(model: nn.Module, name: str, module: nn.Module, use_input: bool = False):
    """Run ``model`` in eval mode (train/eval states restored after) while ``module``'s output (or input)
    is replaced by a fresh leaf tensor, appended to the yielded list on each call: gradients of any
    score with respect to it are the layer's."""
    captured = []

    def leaf_of(value, what):
        first = value[0] if isinstance(value, (tuple, list)) else value
        if not isinstance(first, torch.Tensor):
            raise TypeError(f"gradcam: layer {name!r} {what} {type(first).__name__}, expected a tensor")
        # A fresh leaf: the gradient is wanted only downstream of this layer, and the clone keeps
        # in-place operations of the following layers away from it.
        leaf = first.detach().requires_grad_(True)
        captured.append(leaf)
        if isinstance(value, (tuple, list)):
            return type(value)((leaf.clone(), *value[1:]))
        return leaf.clone()

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    if use_input:
        handle = module.register_forward_pre_hook(lambda mod, args: leaf_of(args, "received"))
    else:
        handle = module.register_forward_hook(lambda mod, args, output: leaf_of(output, "returned"))
    try:
        with torch.enable_grad():
            yield captured
    finally:
        handle.remove()
        for m, training in modes:
            m.training = training


def layer_gradient(name: str, captured: list, score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, ∂score/∂A)`` of the one captured activation A of layer ``name``."""
    if not captured:
        raise _NotRun(name)
    if len(captured) > 1:
        raise ValueError(f"gradcam: layer {name!r} ran {len(captured)} times in one forward pass; expected "
                         f"exactly once")
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(score, captured[0], allow_unused=True)
    if grad is None:
        raise ValueError(f"gradcam: the class scores do not depend on layer {name!r}")
    return captured[0].detach(), grad


def _activation_and_gradient(model, images, name, module, target, use_input: bool):
    """One forward pass; the layer's output (or input) A, and ∂y^c/∂A for the target classes."""
    with captured_layer(model, name, module, use_input) as captured:
        logits = model(images)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != images.shape[0]:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"gradcam: expected the model to return ({images.shape[0]}, num_classes) logits, got "
                             f"{shape}")
        if not captured:
            raise _NotRun(name)
        classes = _target_classes(target, logits)
        act, grad = layer_gradient(name, captured, logits.gather(1, classes[:, None]).sum())
    return logits.detach(), act, grad


def _gradcam_weights(act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Grad-CAM's α^c_k: the gradient averaged over the map."""
    return grad.mean((2, 3))                                                      # α (B, K)


def _gradcam_pp_weights(act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++'s w^c_k: positive gradients weighted by α^{kc}_{ij} = g² / (2g² + Σ A · g³)."""
    g2 = grad.pow(2)
    g3 = g2 * grad
    denom = 2 * g2 + act.sum((2, 3), keepdim=True) * g3
    a = torch.where(grad != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                    torch.zeros_like(g2))                                         # (B, K, h, w)
    return (a * grad.clamp_min(0)).sum((2, 3))                                    # w (B, K)


# Explanation methods are plug-ins: ``fn(activations, gradients) -> channel weights (B, K)``.
EXPLAIN_METHODS: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry("explanation method")
EXPLAIN_METHODS.register("gradcam", _gradcam_weights)
EXPLAIN_METHODS.register("gradcam++", _gradcam_pp_weights)


def check_method(who: str, method) -> None:
    """A clear error naming ``who`` unless ``method`` is a registered explanation method."""
    if method not in EXPLAIN_METHODS:
        raise ValueError(f"{who}: method must be one of {tuple(EXPLAIN_METHODS.names())}, got {method!r}")


def cam_from_activations(act: torch.Tensor, grad: torch.Tensor, method: str = "gradcam") -> torch.Tensor:
    """L^c (B, h, w) from activations A and gradients g, both (B, K, h, w)."""
    check_method("gradcam", method)
    weights = EXPLAIN_METHODS[method](act, grad)
    return torch.relu((weights[:, :, None, None] * act).sum(1))                   # (B, h, w)


def gradcam(model: nn.Module, images: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None,
            layer: str | nn.Module = "auto", method: str = "gradcam", *, normalize: bool = True,
            return_logits: bool = False):
    """Class activation maps of ``images`` at input resolution, (B, H, W).

    Args:
        model: a classifier returning (B, num_classes) logits. It runs in eval mode; each
            module's train/eval state is restored afterwards, and no parameter gradient is touched.
        images: (B, C, H, W), already normalised as the model expects.
        target: the class to explain: None (each image's top prediction), one index for all, or
            one index per image.
        layer: "auto" (the last stage, from ``feature_info``), a module name, or a module.
        method: "gradcam" or "gradcam++".
        normalize: divide each map by its maximum (so it lies in [0, 1]; an all-zero map stays
            zero). Scaling does not change ``energy_in_box`` or the pointing game.
        return_logits: also return the logits of the forward pass, ``(cams, logits)``.
    """
    _check_images("gradcam", images)
    check_method("gradcam", method)
    if torch.is_inference_mode_enabled():
        raise RuntimeError("gradcam: needs gradients; call it outside torch.inference_mode()")
    name, module = resolve_layer(model, layer)
    num_chs = getattr(model, "feature_info")[-1].get("num_chs") if layer == "auto" else None
    prefix = getattr(model, "num_prefix_tokens", None)
    while True:
        try:
            logits, act, grad = _activation_and_gradient(model, images, name, module, target, use_input=False)
            break
        except _NotRun:
            name, module = _last_child_run(model, images, name, module)
    who = f"gradcam (layer {name!r})"
    if act.dim() == 3:
        extra = token_grid(who, act.shape[1], images.shape[-2:], prefix)[2]
        if extra and not grad[:, extra:].any():
            # Pooling by class token: the last block's patch tokens never reach the logits, so
            # explain that block's input instead (the usual choice for ViTs).
            logits, act, grad = _activation_and_gradient(model, images, name, module, target, use_input=True)
            who = f"gradcam (input of layer {name!r})"
    act, grad = _as_maps(who, act, grad, images.shape[-2:], num_chs, prefix)
    cam = cam_from_activations(act, grad, method)                                  # (B, h, w)
    cam = F.interpolate(cam[:, None], size=tuple(images.shape[-2:]), mode="bilinear",
                        align_corners=False)[:, 0]                                 # (B, H, W)
    cam = normalize_peak(cam) if normalize else cam
    return (cam, logits) if return_logits else cam


def normalize_peak(cam: torch.Tensor) -> torch.Tensor:
    """Each (H, W) map of ``cam`` (B, H, W) divided by its maximum; an all-zero map stays zero."""
    peak = cam.amax((1, 2), keepdim=True)
    return cam / torch.where(peak > 0, peak, torch.ones_like(peak))
