"""export_model: ONNX read back by onnxruntime and torch.export programs read back by torch.export.load give the
eager outputs, a dynamic batch runs at other batch sizes, and a file that fails its check is never written."""
from __future__ import annotations

import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from attnvision import create_model
from attnvision.export import export_model

SIZE = (3, 16, 16)  # resnet20's CIFAR stem takes any side; 16 keeps the export quick


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    return create_model("resnet20", num_classes=7).eval()


def test_onnx_with_a_dynamic_batch_gives_the_eager_outputs_at_batch_1_and_3(resnet20, tmp_path):
    path = tmp_path / "resnet20.onnx"
    result = export_model(resnet20, path, format="onnx", input_size=SIZE, dynamic_batch=True)
    assert result.batch_sizes == (1, 3) and result.max_abs_diff < 1e-4 and result.opset >= 18
    (batch_dim, *rest) = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert batch_dim.dim_param and [d.dim_value for d in rest] == list(SIZE)  # a symbolic batch
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 5):
        x = torch.randn(batch, *SIZE)
        (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        torch.testing.assert_close(torch.from_numpy(out), resnet20(x), rtol=1e-4, atol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["resnet20.onnx"]  # no temporary file left


def test_exported_program_round_trip_gives_the_eager_outputs_at_its_fixed_batch(resnet20, tmp_path):
    path = tmp_path / "resnet20.pt2"
    result = export_model(resnet20, path, format="exported-program", input_size=SIZE, batch_size=2)
    assert result.batch_sizes == (2,) and result.max_abs_diff < 1e-5 and result.opset is None
    program = torch.export.load(str(path)).module()
    x = torch.randn(2, *SIZE)
    torch.testing.assert_close(program(x), resnet20(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match="batch|shape|size|Guard|guard"):
        program(torch.randn(3, *SIZE))  # the batch is part of the program


def test_exported_program_with_a_dynamic_batch_runs_other_batches(resnet20, tmp_path):
    path = tmp_path / "resnet20.pt2"
    export_model(resnet20, path, format="exported-program", input_size=SIZE, dynamic_batch=True)
    program = torch.export.load(str(path)).module()
    for batch in (1, 3, 4):
        x = torch.randn(batch, *SIZE)
        torch.testing.assert_close(program(x), resnet20(x), rtol=1e-5, atol=1e-5)


class ExportsSomethingElse(nn.Module):
    """Computes x + 1 when traced for export, x otherwise: the exported file cannot pass the check."""

    def forward(self, x):
        return x.flatten(1) + 1 if torch.compiler.is_exporting() else x.flatten(1)


def test_an_export_that_differs_from_the_eager_model_is_an_error_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"export: the exported-program export differs from the eager model by 1 at "
                                         r"batch 1 \(tolerance .*\); nothing written"):
        export_model(ExportsSomethingElse(), tmp_path / "m.pt2", format="exported-program", input_size=(1, 2, 2))
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_one_line_errors(resnet20, tmp_path):
    with pytest.raises(ValueError, match="export: format must be one of onnx, exported-program, got 'tflite'"):
        export_model(resnet20, tmp_path / "m", format="tflite")
    with pytest.raises(ValueError, match=r"input_size must be three positive integers \(C, H, W\), got \(16, 16\)"):
        export_model(resnet20, tmp_path / "m", format="exported-program", input_size=(16, 16))
    with pytest.raises(ValueError, match="opset is for the onnx format"):
        export_model(resnet20, tmp_path / "m", format="exported-program", input_size=SIZE, opset=18)
    assert list(tmp_path.iterdir()) == []
