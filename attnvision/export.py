"""A model written as a file that runs without attnvision: ONNX or a ``torch.export`` program, checked.

``export_model(model, "model.onnx", format="onnx", input_size=(3, 224, 224))`` traces the model in eval
mode on CPU with ``torch.export`` and writes

- ``format="onnx"``: an ONNX model from ``torch.onnx.export(dynamo=True)`` (the exporter the test suite
  checks every family with; ``opset`` picks the opset, default the exporter's), run back in onnxruntime;
- ``format="exported-program"``: ``torch.export.save`` of the program (``.pt2``), loaded back with
  ``torch.export.load`` and run.

The file read back is run on a fixed random input and compared with the eager model: the largest absolute
difference is returned, and an export whose outputs differ by more than ``atol + rtol·max|eager|`` is an
error. The file is written to a temporary name beside ``path`` and renamed once the check passed, so
``path`` never holds an unchecked or partial export. ``dynamic_batch=True`` exports a symbolic batch
dimension (traced at batch 2, checked at batches 1 and 3); otherwise the batch is fixed at ``batch_size``.
Custom operators (SASA's local attention) export as their decomposition into standard operators.
"""
from __future__ import annotations

import copy
import importlib
import io
from dataclasses import dataclass

import torch
from torch import nn

from .io import atomic_write

FORMATS = ("onnx", "exported-program")
SUFFIXES = {"onnx": ".onnx", "exported-program": ".pt2"}
# what each format needs beyond torch, and the extra that installs it
_NEEDS = {"onnx": (("onnx", "onnxscript", "onnxruntime"), "export"), "exported-program": ((), None)}


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote and how far its outputs are from the eager model's."""

    path: str
    format: str
    input_size: tuple[int, ...]          # (C, H, W)
    batch_sizes: tuple[int, ...]         # the batches the file was run at
    max_abs_diff: float                  # the largest |file - eager| over those runs
    dynamic_batch: bool
    opset: int | None = None             # ONNX only

    def describe(self) -> str:
        shape = "x".join(map(str, self.input_size))
        kind = self.format + (f" opset {self.opset}" if self.opset is not None else "")
        batch = "dynamic batch" if self.dynamic_batch else f"batch {self.batch_sizes[0]}"
        runs = ", ".join(map(str, self.batch_sizes))
        return (f"wrote {self.path} ({kind}, {batch}, input {shape}): largest absolute difference from the eager "
                f"model {self.max_abs_diff:.3g} (batch {runs})")


def check_format(format: str, who: str = "export") -> None:
    """Raise unless ``format`` is known and the libraries it needs are importable (one line naming the extra)."""
    if format not in FORMATS:
        raise ValueError(f"{who}: format must be one of {', '.join(FORMATS)}, got {format!r}")
    modules, extra = _NEEDS[format]
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise ImportError(f"{who}: the {format} format needs {module}: pip install \"attnvision[{extra}]\""
                              ) from None


def export_model(model: nn.Module, path, *, format: str = "onnx", input_size=(3, 224, 224), batch_size: int = 1,
                 dynamic_batch: bool = False, opset: int | None = None, rtol: float = 1e-4, atol: float = 1e-4,
                 who: str = "export") -> ExportResult:
    """Write ``model`` (a copy, in eval mode on CPU) to ``path`` as ``format``, check it against the eager model
    and return an :class:`ExportResult`; see the module's documentation."""
    check_format(format, who)
    size = tuple(input_size)
    if len(size) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise ValueError(f"{who}: input_size must be three positive integers (C, H, W), got {input_size!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{who}: batch_size must be a positive integer, got {batch_size!r}")
    if opset is not None and format != "onnx":
        raise ValueError(f"{who}: opset is for the onnx format, not {format!r}")
    if dynamic_batch and batch_size != 1:
        raise ValueError(f"{who}: a dynamic batch is traced at 2 and checked at 1 and 3: leave batch_size out")
    model = copy.deepcopy(model).cpu().eval()
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2 if dynamic_batch else batch_size, *size, generator=generator)
    batches = (1, 3) if dynamic_batch else (batch_size,)
    inputs = [torch.randn(b, *size, generator=generator) for b in batches]
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    found: dict = {}

    def write(tmp: str) -> None:
        with torch.no_grad():
            if format == "onnx":
                found["opset"] = _write_onnx(model, example, tmp, dynamic_shapes, opset)
                outputs = _run_onnx(tmp, inputs)
            else:
                _write_program(model, example, tmp, dynamic_shapes)
                loaded = _load_program(tmp)
                outputs = [loaded(x) for x in inputs]
            diff = 0.0
            for x, out in zip(inputs, outputs):
                eager = model(x)
                if not isinstance(eager, torch.Tensor) or not isinstance(out, torch.Tensor):
                    raise ValueError(f"{who}: the model must return one tensor, got {type(eager).__name__}")
                if out.shape != eager.shape:
                    raise ValueError(f"{who}: the exported model gives shape {tuple(out.shape)} at batch {len(x)}, "
                                     f"the eager model {tuple(eager.shape)}; nothing written")
                gap = (out.float() - eager.float()).abs().max().item()
                limit = atol + rtol * eager.abs().max().item()
                if not gap <= limit:  # NaN included
                    raise ValueError(f"{who}: the {format} export differs from the eager model by {gap:.3g} at batch "
                                     f"{len(x)} (tolerance {limit:.3g}); nothing written")
                diff = max(diff, gap)
            found["diff"] = diff

    atomic_write(path, write)
    return ExportResult(path=str(path), format=format, input_size=size, batch_sizes=batches,
                        max_abs_diff=found["diff"], dynamic_batch=dynamic_batch, opset=found.get("opset"))


def _write_onnx(model: nn.Module, example: torch.Tensor, path: str, dynamic_shapes, opset: int | None) -> int:
    """Export with the dynamo exporter (its default optimisation off, as the tests check it); the opset used."""
    program = torch.onnx.export(model, (example,), dynamo=True, optimize=False, dynamic_shapes=dynamic_shapes,
                                opset_version=opset, verbose=False)
    assert program is not None  # dynamo=True always returns the program
    proto = program.model_proto
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _write_program(model: nn.Module, example: torch.Tensor, path: str, dynamic_shapes) -> None:
    # through a buffer: torch.export.save wants a name ending in .pt2, and the temporary file's does not
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes), buffer)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


def _load_program(path: str) -> nn.Module:
    with open(path, "rb") as f:
        return torch.export.load(io.BytesIO(f.read())).module()


def _run_onnx(path: str, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [torch.from_numpy(session.run(None, {name: x.numpy()})[0]) for x in inputs]
