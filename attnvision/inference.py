"""A model made ready for inference: BatchNorm folded into convolutions, channels-last, optionally compiled.

``optimize_for_inference(model)`` returns a copy of an eval-mode model that computes the same
function with less work:

- every BatchNorm that reads only the output of a convolution of the same dimension is folded
  into it (y = γ (Wx + b − μ)/√(σ² + ε) + β is a convolution with weight γW/√(σ² + ε) and bias
  γ(b − μ)/√(σ² + ε) + β; ``torch.nn.utils.fusion.fuse_conv_bn_eval``) and replaced by an
  identity. This covers the BN after each ResNet convolution and the BN inside the attention
  gates (CBAM's spatial 7×7 conv + BN(1), BAM's dilated spatial branch and its final BN(1));
  BatchNorm after a Linear layer or before a convolution (pre-activation blocks) is left as it is;
- parameters in channels-last memory, so that the CPU convolution kernels take the fast layout
  from the first layer on;
- optionally ``torch.compile``, which fuses the remaining element-wise work (gate products, ReLU,
  residual sums) into the convolutions' neighbours; ``compile=True`` also freezes the weights into the
  compiled code (inductor's ``freezing``: constants folded, convolution weights packed once for
  oneDNN), which is what an inference-only copy allows.

Which convolution feeds which BatchNorm is read from a ``torch.fx`` trace of the model (the
models of this library are traceable); the model itself keeps its class, methods and control
flow. A model that cannot be traced keeps its BatchNorms, with a warning that says why.
"""
from __future__ import annotations

import copy
import warnings
from typing import cast

import torch
from torch import nn

from .layers.pointwise import PointwiseConv2d

_CONV_BN = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d,
            PointwiseConv2d: nn.BatchNorm2d}


class FrozenCompiled(nn.Module):
    """``torch.compile(module)`` whose calls run with inductor's ``freezing`` on: the weights become constants
    of the compiled code (folded, convolution weights packed once for oneDNN, convolutions fused with their
    ReLU and residual sums), for inference under ``torch.no_grad()``; with gradients on it compiles as usual.

    The flag has to be on while Dynamo traces the first call (and any recompilation), not only while
    inductor compiles: ``torch.compile(module, options={"freezing": True})`` sets it for inductor alone,
    so Dynamo hands the parameters over as inputs, which nothing packs. Attributes the wrapper lacks are
    read from the compiled module (and so from ``module``).
    """

    def __init__(self, module: nn.Module, **compile_kwargs):
        super().__init__()
        self.compiled = torch.compile(module, **compile_kwargs)

    def forward(self, *args, **kwargs):
        import torch._inductor.config as inductor_config  # noqa: PLC0415 - inductor loads only when used
        with inductor_config.patch(freezing=True):
            return self.compiled(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "compiled":  # not set yet (a copy being built): nothing to read through
                raise
            return getattr(self.compiled, name)


class _ConvTracer(torch.fx.Tracer):
    """The default tracer, with this library's convolution modules kept as modules (calls) in the graph."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m) in _CONV_BN or super().is_leaf_module(m, qualname)


def _foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv name, BN name) pairs where the BN's only input is the conv's output and nothing else reads that output."""
    graph = _ConvTracer().trace(model)
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            assert isinstance(node.target, str)  # a module call's target is the module's name
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs: list[tuple[str, str]] = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        src = node.args[0]
        if not isinstance(src, torch.fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        conv_name, bn_name = src.target, node.target
        assert isinstance(conv_name, str) and isinstance(bn_name, str)  # module calls: targets are names
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        # exact types only: a subclass may change what forward computes (weight standardisation, ...)
        if _CONV_BN.get(type(conv)) is not type(bn):
            continue
        if bn.running_mean is None or calls[conv_name] != 1 or calls[bn_name] != 1:
            continue  # batch statistics at eval time, or a module called twice: no fixed affine map to fold
        pairs.append((conv_name, bn_name))
    return pairs


def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold in place every BatchNorm that only reads a convolution's output into that convolution.

    The model must be in eval mode. Returns the folded (conv name, BN name) pairs; each BN is
    replaced by ``nn.Identity``. Raises what ``torch.fx.symbolic_trace`` raises for a model it
    cannot trace.
    """
    _check_eval("fold_batchnorm", model)
    pairs = _foldable_pairs(model)
    _fold(model, pairs)
    return pairs


def _fold(model: nn.Module, pairs: list[tuple[str, str]]) -> None:
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        # as _foldable_pairs paired them
        assert isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
        assert isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))
        fused = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
        model.set_submodule(conv_name, fused)
        model.set_submodule(bn_name, nn.Identity())


def _check_eval(caller: str, model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{caller}: expected an nn.Module, got {type(model).__name__}")
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        raise ValueError(f"{caller}: the model must be in eval mode (call model.eval() first); "
                         f"{len(training)} module(s) are in training mode, e.g. {training[0]!r}")


def optimize_for_inference(model: nn.Module, *, channels_last: bool = True, compile: bool | dict = False) -> nn.Module:
    """A copy of eval-mode ``model`` for inference: BN folded, channels-last, optionally ``torch.compile``-d.

    Args:
        model: an ``nn.Module`` in eval mode (``model.eval()``); it is not changed.
        channels_last: move 4-D parameters to channels-last memory.
        compile: True for inductor with the weights frozen in (:class:`FrozenCompiled`: later changes to
            the copy's parameters are not seen by the compiled code), or a dict of ``torch.compile`` keyword
            arguments, passed as they are (``{"mode": "max-autotune"}``, ``{"backend": "aot_eager"}``, ...).

    Outputs equal the eager model's up to float rounding (the folded weights are rounded once).
    The copy is for inference only: its BatchNorms are gone, so training it is not training the model.
    """
    _check_eval("optimize_for_inference", model)
    if not isinstance(channels_last, bool):
        raise TypeError(f"optimize_for_inference: channels_last must be True or False, got {channels_last!r}")
    if not isinstance(compile, (bool, dict)):
        raise TypeError(f"optimize_for_inference: compile must be True, False or a dict of torch.compile "
                        f"arguments, got {type(compile).__name__}")
    model = copy.deepcopy(model)
    try:
        pairs = _foldable_pairs(model)
    except Exception as e:  # noqa: BLE001 - any tracing failure leaves the BatchNorms unfolded, said aloud
        warnings.warn(f"optimize_for_inference: {type(model).__name__} cannot be traced by torch.fx "
                      f"({type(e).__name__}: {e}); its BatchNorm layers are not folded", stacklevel=2)
        pairs = []
    _fold(model, pairs)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile is True:
        return FrozenCompiled(model)
    if isinstance(compile, dict):
        return cast(nn.Module, torch.compile(model, **compile))  # a module compiled is a module (OptimizedModule)
    return model
