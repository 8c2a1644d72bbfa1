"""The trainer: accuracy on digits, the run directory's files, exact resumption, NaN stop, atomic checkpoints."""
from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import signal

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from attnvision import create_model, io, load_checkpoint
from attnvision.cli.main import main
from attnvision.data import create_dataset
from attnvision.train import NonFiniteLossError, TrainConfig, checkpoints, train
from attnvision.train.checkpoints import save_weights

DIGITS_RUN = ["--model", "resnet20", "--model-kwargs", '{"stem": "imagenet"}', "--data", "digits", "--epochs", "4",
              "--batch-size", "64", "--lr", "0.1", "--seed", "0", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """resnet20 with an ImageNet stem (2.7 M MACs per 32×32 digit), 4 epochs: about 10 s on one core."""
    out = tmp_path_factory.mktemp("digits")
    assert main(["train", *DIGITS_RUN, "--out", str(out)]) == 0
    return out


def test_digits_short_run_reaches_95_percent(digits_run):
    summary = json.loads((digits_run / "summary.json").read_text())
    assert summary["val_acc1"] >= 95.0, summary
    assert summary["epochs_done"] == 4 and summary["params"] == 270_074


def test_run_directory_holds_the_contracted_files(digits_run):
    with open(digits_run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    for col in ("epoch", "train_loss", "val_loss", "val_acc1", "val_acc5", "lr", "seconds"):
        assert col in rows[0]
    summary = json.loads((digits_run / "summary.json").read_text())
    assert summary["val_acc1"] == pytest.approx(float(rows[-1]["val_acc1"]), abs=1e-3)
    assert summary["best_val_acc1"] == pytest.approx(max(float(r["val_acc1"]) for r in rows), abs=1e-3)
    for key in ("macs", "train_images_per_s", "infer_images_per_s"):
        assert summary[key] > 0
    jsonl = [json.loads(line) for line in (digits_run / "metrics.jsonl").read_text().splitlines()]
    assert len(jsonl) == 4
    with safe_open(str(digits_run / "last.safetensors"), "pt") as f:
        assert f.metadata()["epoch"] == "4"
    model = create_model("resnet20", num_classes=10, in_chans=1, stem="imagenet")
    assert load_checkpoint(model, digits_run / "best.safetensors").missing_keys == []


def test_eval_command_reproduces_the_final_accuracy(digits_run, capsys):
    assert main(["eval", "--model", "resnet20", "--model-kwargs", '{"stem": "imagenet"}', "--data", "digits",
                 "--checkpoint", str(digits_run / "last.safetensors"), "--per-class"]) == 0
    record = json.loads((digits_run / "eval.json").read_text())
    summary = json.loads((digits_run / "summary.json").read_text())
    assert record["acc1"] == pytest.approx(summary["val_acc1"], abs=1e-6)
    assert record["count"] == 360 and sum(map(sum, record["confusion"])) == 360
    assert "top-1" in capsys.readouterr().out


class Tiny(nn.Module):
    """conv → BN → ReLU → dropout → pool → linear: BN buffers and dropout's random numbers both
    have to be restored for an exact resumption."""

    def __init__(self, in_chans=1, num_classes=10, fail_at_call: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(8, num_classes)
        self.calls, self.fail_at_call = 0, fail_at_call

    def forward(self, x):
        if self.training:
            self.calls += 1
        x = self.drop(torch.relu(self.bn(self.conv(x)))).mean((2, 3))
        out = self.fc(x)
        return out * float("nan") if self.calls == self.fail_at_call else out


def _tiny_cfg(out, **kw):
    return TrainConfig(model="tiny", data="digits", epochs=2, batch_size=64, lr=0.05, deterministic=True,
                       progress=False, threads=1, out=str(out), **kw)


def _tiny_train(out, on_step=None, resume=False, fail_at_call=None):
    torch.manual_seed(0)
    return train(_tiny_cfg(out, resume=resume), model=Tiny(fail_at_call=fail_at_call),
                 train_set=create_dataset("digits", "train"), val_set=create_dataset("digits", "val"), on_step=on_step)


def test_resume_after_ctrl_c_reaches_the_same_weights(tmp_path):
    full = _tiny_train(tmp_path / "full")

    def interrupt(step):
        if step == 30:  # in the middle of epoch 2 (22 steps per epoch)
            os.kill(os.getpid(), signal.SIGINT)

    cut = _tiny_train(tmp_path / "cut", on_step=interrupt)
    assert cut["interrupted"] and cut["stop_signal"] == "SIGINT" and cut["epochs_done"] == 1
    with safe_open(str(tmp_path / "cut" / "last.safetensors"), "pt") as f:
        assert f.metadata() == {"epoch": "1", "batch": "8"}
    resumed = _tiny_train(tmp_path / "cut", resume=True)
    a, b = load_file(tmp_path / "full" / "last.safetensors"), load_file(tmp_path / "cut" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["val_acc1"] == full["val_acc1"]
    rows = [list(csv.DictReader(open(tmp_path / d / "metrics.csv"))) for d in ("full", "cut")]
    assert [r["train_loss"] for r in rows[0]] == [r["train_loss"] for r in rows[1]]


def test_resume_refuses_a_different_recipe(tmp_path):
    _tiny_train(tmp_path)
    with pytest.raises(ValueError, match="cannot resume with a different recipe: lr was 0.05, now 0.1"):
        train(TrainConfig(**{**_tiny_cfg(tmp_path).__dict__, "lr": 0.1, "resume": True}), model=Tiny())


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step 25 \(epoch 2, batch 3 of 22\); stopped "
                       r"before updating the weights; the last good checkpoint is .*last.state.pt "
                       r"\(epoch 1, batch 0\)"):
        _tiny_train(tmp_path, fail_at_call=25)
    with safe_open(str(tmp_path / "last.safetensors"), "pt") as f:
        assert f.metadata()["epoch"] == "1"
        assert all(torch.isfinite(f.get_tensor(k)).all() for k in f.keys())


def _crash_while_saving(path):
    """Child process: start writing new weights, then die abruptly half-way through the file."""
    def half_then_die(path, data):
        def write(tmp):
            with open(tmp, "wb") as f:
                f.write(data[:len(data) // 2])
                f.flush()
            os._exit(1)
        io.atomic_write(path, write)

    checkpoints.atomic_write_bytes = half_then_die
    save_weights(path, {"w": torch.full((100,), 2.0)})


def test_a_checkpoint_killed_mid_write_leaves_the_previous_one_loadable(tmp_path):
    path = tmp_path / "last.safetensors"
    save_weights(path, {"w": torch.ones(100)}, {"epoch": 1})
    proc = mp.get_context("fork").Process(target=_crash_while_saving, args=(path,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 1
    assert torch.equal(load_file(path)["w"], torch.ones(100))
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # the torn write stayed in its temporary file


def test_train_without_progress_bars_prints_one_line_per_epoch(capsys):
    train(TrainConfig(model="resnet20", data="synthetic:1x16x16", epochs=2, batch_size=128, progress=False, threads=1,
                      model_kwargs=dict(stem="imagenet")))
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    assert all("train loss" in line and "val acc1" in line and " s, " in line for line in lines), lines
    assert "it/s" not in captured.err and "%|" not in captured.err  # no bar
