"""``attnvision eval``: --run DIR alone, --attach, torchvision models, and one-line errors for bad files."""
from __future__ import annotations

import json
import os

import pytest
import torch

import attnvision as av
from attnvision.cli.main import main
from attnvision.data import create_dataset
from attnvision.train import evaluate
from attnvision.train.checkpoints import save_weights


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", "--model", "resnet20", "--model-kwargs", '{"stem": "imagenet"}', "--epochs", "1",
                 "--batch-size", "64", "--threads", "1", "--no-progress", "--out", str(out)]) == 0
    return out


def test_eval_run_needs_nothing_else_and_reproduces_the_final_accuracy(run_dir, capsys):
    assert main(["eval", "--run", str(run_dir)]) == 0
    record = json.loads((run_dir / "eval.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert record["acc1"] == pytest.approx(summary["val_acc1"], abs=1e-6) and record["count"] == 360
    assert record["model"] == "resnet20" and record["data"] == "digits"
    captured = capsys.readouterr()
    assert f"resnet20 (attnvision checkpoint {run_dir / 'last.safetensors'}) on digits val" in captured.out
    assert "has not finished" not in captured.err


def _weights(model, path):
    save_weights(path, model.state_dict())
    return str(path)


def test_eval_builds_torchvision_models_and_attached_attention(tmp_path, capsys):
    torch.manual_seed(0)
    model = av.create_model("torchvision:resnet18", num_classes=10)
    av.attach(model, "cbam", init="default")
    path = _weights(model, tmp_path / "w.safetensors")
    rc = main(["eval", "--model", "torchvision:resnet18", "--attach", "cbam", "--attach-init", "default",
               "--checkpoint", path, "--data", "synthetic:3x32x32", "--out", str(tmp_path / "eval.json")])
    assert rc == 0
    expected = evaluate(model, create_dataset("synthetic:3x32x32", "val"), batch_size=256)
    assert json.loads((tmp_path / "eval.json").read_text())["acc1"] == pytest.approx(expected.acc1)


def _bad_file(tmp_path, run_dir, kind):
    if kind == "random.safetensors":
        (tmp_path / kind).write_bytes(os.urandom(2048))
    elif kind == "truncated.pt":
        torch.save(torch.ones(1000), tmp_path / "whole.pt")
        (tmp_path / kind).write_bytes((tmp_path / "whole.pt").read_bytes()[:1500])
    else:
        return str(run_dir / "last.state.pt")
    return str(tmp_path / kind)


@pytest.mark.parametrize("kind, message", [
    ("random.safetensors", "is not a valid safetensors file"),
    ("truncated.pt", "is not a valid checkpoint: it is truncated or damaged"),
    ("last.state.pt", "is a training state (for `train --resume`), not weights; load"),
])
def test_bad_checkpoint_files_are_one_line_errors_and_write_nothing(run_dir, tmp_path, capsys, kind, message):
    path = _bad_file(tmp_path, run_dir, kind)
    before = sorted(os.listdir(tmp_path))
    rc = main(["eval", "--run", str(run_dir), "--checkpoint", path, "--out", str(tmp_path / "eval.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and message in err and "weights_only" not in err
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("args, message", [
    (["--run", "RUN", "--model", "resnet20"], "gives the model already; drop --model"),
    (["--run", "NOTARUN"], "holds no run.json: it is not a run directory"),
    (["--model", "resnet20"], "--model needs --checkpoint PATH"),
    ([], "give --run DIR (a training run) or --model NAME"),
    (["--run", "RUN", "--device", "cuda"], "device 'cuda' asked for, but torch finds no CUDA GPU here"),
    (["--run", "RUN", "--input-size", "3", "32", "32"], "--input-size 3 32 32 does not fit 'digits'"),
])
def test_eval_option_errors_are_one_line(run_dir, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = [str(run_dir) if a == "RUN" else str(tmp_path) if a == "NOTARUN" else a for a in args]
    rc = main(["eval", *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and message in err
