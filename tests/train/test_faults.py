"""No lost work: the state saved every K steps, runs that crash resumed exactly, the record of a failed run,
non-finite steps skipped."""
from __future__ import annotations

import dataclasses
import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from test_trainer import Tiny, _tiny_cfg

from attnvision.cli.main import main
from attnvision.data import create_dataset
from attnvision.train import NonFiniteLossError, TrainConfig, train
from attnvision.train.rundir import describe


def _train(out, *, on_step=None, resume=False, model=None, **kw):
    torch.manual_seed(0)
    return train(dataclasses.replace(_tiny_cfg(out, resume=resume), **kw), model=model or Tiny(),
                 train_set=create_dataset("digits", "train"), val_set=create_dataset("digits", "val"), on_step=on_step)


def _same_weights(a, b) -> bool:
    a, b = load_file(a / "last.safetensors"), load_file(b / "last.safetensors")
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Crash(RuntimeError):
    pass


def test_save_every_steps_keeps_the_state_of_the_last_multiple_and_a_crash_resumes_from_it(tmp_path):
    _train(tmp_path / "full")
    seen = {}

    def crash(step):
        if step >= 5:
            with safe_open(str(tmp_path / "cut" / "last.safetensors"), "pt") as f:
                seen[step] = f.metadata()
        if step == 33:  # epoch 2 (22 steps per epoch), 3 steps after the save at step 30
            raise Crash("the machine went away")

    with pytest.raises(Crash):
        _train(tmp_path / "cut", on_step=crash, save_every_steps=5)
    # saved at steps 5, 10, ..., at the end of epoch 1 (step 22), then at 25 and 30 in epoch 2
    assert seen[5] == {"epoch": "0", "batch": "5"} and seen[9] == {"epoch": "0", "batch": "5"}
    assert seen[22] == {"epoch": "0", "batch": "20"} and seen[23] == {"epoch": "1", "batch": "0"}
    assert seen[25] == {"epoch": "1", "batch": "3"}
    assert seen[33] == {"epoch": "1", "batch": "8"}
    resumed = _train(tmp_path / "cut", resume=True, save_every_steps=5)
    assert resumed["epochs_done"] == 2 and _same_weights(tmp_path / "full", tmp_path / "cut")


def test_save_every_steps_must_be_a_positive_integer(tmp_path):
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=rf"save_every_steps must be a positive integer .*got {bad!r}"):
            train(TrainConfig(data="synthetic:1x8x8", epochs=1, save_every_steps=bad, out=str(tmp_path)), model=Tiny())


def test_a_run_restarted_by_torchrun_continues_from_its_last_state_by_itself(tmp_path, monkeypatch):
    _train(tmp_path / "full")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")

    def crash(step):
        if step == 33:
            raise Crash("a process died")

    with pytest.raises(Crash):
        _train(tmp_path / "cut", on_step=crash, save_every_steps=5)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # torchrun starts the same command again
    steps = []
    summary = _train(tmp_path / "cut", on_step=steps.append, save_every_steps=5)
    assert steps[0] == 31 and summary["epochs_done"] == 2  # from the state saved at step 30
    assert _same_weights(tmp_path / "full", tmp_path / "cut")


def test_a_restart_treats_a_run_of_another_job_or_recipe_as_a_first_start_does(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "earlier-job")
    _train(tmp_path, epochs=1)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "this-job")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    with pytest.raises(ValueError, match="already holds a run"):
        _train(tmp_path, epochs=1)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "earlier-job")
    with pytest.raises(ValueError, match="already holds a run"):
        _train(tmp_path, epochs=1, lr=0.01)


def _record(out) -> dict:
    return json.loads((out / "run.json").read_text())


def test_the_record_says_running_then_finished_failed_or_interrupted(tmp_path):
    seen = []
    _train(tmp_path / "ok", epochs=1, on_step=lambda step: seen.append(_record(tmp_path / "ok")["status"]))
    assert set(seen) == {"running"} and _record(tmp_path / "ok")["status"] == "finished"

    with pytest.raises(NonFiniteLossError):
        _train(tmp_path / "nan", epochs=1, model=Tiny(fail_at_call=5))
    record = _record(tmp_path / "nan")
    assert record["status"] == "failed" and "\n" not in record["error"]
    assert record["error"].startswith("NonFiniteLossError: train: the loss became nan at step 5 (epoch 1, batch 5")
    assert describe(str(tmp_path / "nan")) == f"a custom model on digits, failed: {record['error']}"

    def interrupt(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    assert _train(tmp_path / "cut", epochs=1, on_step=interrupt)["interrupted"]
    assert _record(tmp_path / "cut")["status"] == "interrupted"
    assert describe(str(tmp_path / "cut")) == "a custom model on digits, interrupted"
    _train(tmp_path / "cut", epochs=1, resume=True)
    assert _record(tmp_path / "cut")["status"] == "finished" and "error" not in _record(tmp_path / "cut")


def _image_folder(root):
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for k in range(4):
                Image.new("RGB", (20, 20), (40 * k, 100, 200 if c == "cat" else 0)).save(root / split / c / f"{k}.png")
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return f"imagefolder:{root}"


def _folder_cfg(data, out, **kw):
    return TrainConfig(model="resnet20", data=data, input_size=(3, 16, 16), epochs=1, batch_size=4, threads=1,
                       progress=False, out=str(out), **kw)


def test_a_bad_image_stops_the_run_before_anything_is_written_naming_it(tmp_path, capsys):
    data = _image_folder(tmp_path / "data")
    with pytest.raises(ValueError, match=r"^train: 1 of the 9 train files of 'imagefolder:.*' cannot be used: "
                                         r"\S*/dog/broken\.jpg \(unreadable: UnidentifiedImageError: .*\); repair "
                                         r"or remove them, or leave them out with --skip-bad-files$"):
        train(_folder_cfg(data, tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    assert main(["train", "--model", "resnet20", "--data", data, "--input-size", "3", "16", "16", "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnvision train: error: 1 of the 9 train files") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_skip_bad_files_trains_without_them_and_lists_them(tmp_path, capsys):
    data = _image_folder(tmp_path / "data")
    summary = train(_folder_cfg(data, tmp_path / "run", skip_bad_files=True))
    assert summary["epochs_done"] == 1 and _record(tmp_path / "run")["status"] == "finished"
    err = capsys.readouterr().err
    assert "train: warning: leaving out 1 of the 9 train files of 'imagefolder:" in err and "broken.jpg" in err
    [line] = (tmp_path / "run" / "bad_files.txt").read_text().splitlines()
    split, path, reason = line.split("\t")
    assert split == "train" and path.endswith("/dog/broken.jpg") and reason.startswith("unreadable: ")


def test_a_mask_with_a_class_out_of_range_stops_a_segmentation_run_before_it_starts(tmp_path):
    for split in ("train", "val"):
        for k in range(3):
            Image.new("RGB", (16, 16)).save(_mkdir(tmp_path / "images" / split) / f"{k}.png")
            mask = np.full((16, 16), 9 if (split, k) == ("val", 2) else k, dtype=np.uint8)
            Image.fromarray(mask).save(_mkdir(tmp_path / "masks" / split) / f"{k}.png")
    cfg = TrainConfig(task="segmentation", model="semantic_fpn", backbone="resnet20", data=f"segfolder:{tmp_path}",
                      num_classes=3, epochs=1, batch_size=2, threads=1, progress=False, out=str(tmp_path / "run"))
    with pytest.raises(ValueError, match=r"1 of the 3 val files of 'segfolder:.*' cannot be used: \S*/masks/val/2\.png "
                                         r"\(has class values \[9\] outside 0…2 and not the ignore index 255\)"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


class NaNAt(Tiny):
    """Tiny whose loss is NaN at the training forwards ``calls`` (after BatchNorm has seen the batch)."""

    def __init__(self, calls):
        super().__init__()
        self.bad = set(calls)

    def forward(self, x):
        out = super().forward(x)
        return out * float("nan") if self.calls in self.bad else out


def test_skip_nonfinite_skips_up_to_n_steps_leaving_the_weights_and_statistics_as_they_were(tmp_path, capsys):
    model, kept = NaNAt({5, 30}), {}

    def keep(step):
        kept[step] = {k: v.clone() for k, v in model.state_dict().items()}

    summary = _train(tmp_path / "run", model=model, on_step=keep, skip_nonfinite=2)
    assert summary["nonfinite_steps"] == 2 and summary["epochs_done"] == 2
    for skipped in (5, 30):  # the optimiser step and the forward's BatchNorm statistics undone
        assert all(torch.equal(kept[skipped][k], kept[skipped - 1][k]) for k in kept[skipped])
    assert not torch.equal(kept[6]["fc.weight"], kept[5]["fc.weight"])
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["nonfinite_steps"] == 2
    err = capsys.readouterr().err
    assert ("train: warning: the loss became nan at step 5 (epoch 1, batch 5 of 22); skipping that step (1 of at "
            "most 2, --skip-nonfinite)") in err
    assert "at step 30 (epoch 2, batch 8 of 22); skipping that step (2 of" in err
    rows = (tmp_path / "run" / "metrics.csv").read_text()
    assert "nan" not in rows  # the skipped batches are left out of the training loss too

    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step 30 \(epoch 2, batch 8 of 22\) after 1 "
                                                 r"skipped \(--skip-nonfinite 1\); stopped before updating"):
        _train(tmp_path / "stop", model=NaNAt({5, 30}), skip_nonfinite=1)
    with pytest.raises(ValueError, match="skip_nonfinite must be an integer >= 0"):
        _train(tmp_path / "bad", skip_nonfinite=-1)
