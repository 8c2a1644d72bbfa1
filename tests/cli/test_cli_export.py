"""``attnvision export``: a model name or a run directory to a checked ONNX or torch.export file, one line of
output; one-line errors (exit 2) for an unknown format, a missing onnxruntime and a run without weights."""
from __future__ import annotations

import re
import sys
from types import SimpleNamespace

import onnxruntime
import torch

from attnvision import load_model
from attnvision.cli.main import main
from attnvision.train import TrainConfig
from attnvision.train.checkpoints import LAST_WEIGHTS, save_weights
from attnvision.train.rundir import create_run_model, model_metadata, write_record

SMALL = ["--input-size", "3", "16", "16"]


def _printed_line(capsys) -> str:
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return out[0]


def test_a_model_name_exports_to_onnx_checked_in_onnxruntime(tmp_path, capsys):
    out = tmp_path / "r20.onnx"
    assert main(["export", "resnet20", "--format", "onnx", *SMALL, "--num-classes", "7", "--out", str(out),
                 "--threads", "1"]) == 0
    line = _printed_line(capsys)
    match = re.fullmatch(rf"wrote {re.escape(str(out))} \(onnx opset (\d+), batch 1, input 3x16x16\): largest "
                         r"absolute difference from the eager model (\S+) \(batch 1\)", line)
    assert match and float(match.group(2)) < 1e-4, line
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 16, 16] and session.get_outputs()[0].shape == [1, 7]


def _write_run(run, with_weights=True):
    """A run directory as the trainer writes it: run.json, then weights that carry the model record."""
    config = {k: v for k, v in TrainConfig(model="resnet20", data="digits", epochs=1, out=str(run)).to_dict().items()
              if k not in ("resume", "overwrite", "progress")}
    digits = SimpleNamespace(num_classes=10, classes=[str(i) for i in range(10)])
    record = write_record(str(run), config, digits, dict(input_size=(1, 32, 32), mean=(0.5,), std=(0.25,),
                                                         crop_pct=1.0))
    torch.manual_seed(3)
    model = create_run_model("resnet20", {}, num_classes=10, in_chans=1)
    if with_weights:
        save_weights(run / LAST_WEIGHTS, model.state_dict(), dict(model_metadata(record), epoch=1, batch=0))
    return model


def test_a_run_directory_exports_its_model_with_its_weights_and_input_size(tmp_path, capsys):
    run = tmp_path / "run"
    _write_run(run)
    assert main(["export", str(run), "--format", "exported-program", "--dynamic-batch", "--threads", "1"]) == 0
    line = _printed_line(capsys)
    assert line.startswith(f"wrote {run / 'last.pt2'} (exported-program, dynamic batch, input 1x32x32)")
    assert line.endswith("(batch 1, 3)")
    program = torch.export.load(str(run / "last.pt2")).module()
    trained = load_model(run / LAST_WEIGHTS).eval()
    x = torch.randn(3, 1, 32, 32)
    torch.testing.assert_close(program(x), trained(x), rtol=1e-5, atol=1e-5)


def test_a_run_directory_without_weights_is_a_one_line_error(tmp_path, capsys):
    run = tmp_path / "run"
    _write_run(run, with_weights=False)
    assert main(["export", str(run), "--format", "exported-program"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"attnvision export: error: no weights file at '{run / LAST_WEIGHTS}' (the run has not saved any "
                   f"weights yet)")
    assert sorted(p.name for p in run.iterdir()) == ["run.json"]


def test_an_unknown_format_is_a_one_line_usage_error(capsys):
    assert main(["export", "resnet20", "--format", "tflite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice: 'tflite'" in err[0] and "exported-program" in err[0]


def test_a_missing_onnxruntime_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    assert main(["export", "resnet20", "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err.strip() == ('attnvision export: error: the onnx format needs onnxruntime: '
                                               'pip install "attnvision[export]"')
    assert list(tmp_path.iterdir()) == []


def test_run_options_and_model_options_are_not_mixed(tmp_path, capsys):
    run = tmp_path / "run"
    _write_run(run)
    assert main(["export", str(run), "--format", "exported-program", "--num-classes", "5"]) == 2
    assert "run directory, which gives the model already" in capsys.readouterr().err
    assert main(["export", "resnet20", "--format", "exported-program", "--weights", "best"]) == 2
    assert "--weights picks a run's weights file" in capsys.readouterr().err
