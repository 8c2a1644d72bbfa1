"""No lost work: the state saved every K steps, runs that crash resumed exactly, the record of a failed run,
non-finite steps skipped."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from attnvision.data import create_dataset
from attnvision.train import TrainConfig, train
from test_trainer import Tiny, _tiny_cfg


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
