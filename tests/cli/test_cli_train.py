"""``attnvision train``: a run directory is a record; --overwrite, --resume DIR, Ctrl-C and bad input."""
from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
import torch
from safetensors import safe_open

from attnvision.cli.main import main
from attnvision.train import trainer

# resnet20 with an ImageNet stem on digits: 22 steps of 64 images an epoch, a few seconds.
RUN = ["--model", "resnet20", "--model-kwargs", '{"stem": "imagenet"}', "--data", "digits", "--batch-size", "64",
       "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", *RUN, "--epochs", "1", "--out", str(out)]) == 0
    return out


def _copy(run, tmp_path):
    return shutil.copytree(run, tmp_path / "r")


def _snapshot(out):
    return {p: (out / p).read_bytes() for p in sorted(os.listdir(out)) if (out / p).is_file()}


def _one_error_line(capsys, code, rc):
    assert rc == code
    err = capsys.readouterr().err
    assert err.startswith("attnvision train: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_run_json_records_what_eval_and_cam_need(one_epoch):
    record = json.loads((one_epoch / "run.json").read_text())
    assert record["model"] == "resnet20" and record["model_kwargs"] == {"stem": "imagenet"}
    assert record["num_classes"] == 10 and record["in_chans"] == 1 and record["classes"] == list("0123456789")
    from attnvision.data import create_dataset
    digits = create_dataset("digits", "train")
    assert record["pretrained_cfg"]["input_size"] == [1, 32, 32]
    assert record["pretrained_cfg"]["mean"] == list(digits.mean) and record["pretrained_cfg"]["std"] == list(digits.std)
    assert record["config"]["epochs"] == 1 and record["config"]["batch_size"] == 64


def test_train_refuses_an_out_holding_another_run_and_writes_nothing(one_epoch, tmp_path, capsys):
    out = _copy(one_epoch, tmp_path)
    before = _snapshot(out)
    rc = main(["train", "--model", "resnet20_se", "--epochs", "1", "--out", str(out)])
    err = _one_error_line(capsys, 2, rc)
    assert "already holds a run (resnet20 on digits, finished" in err
    assert "--resume" in err and "--overwrite" in err
    assert _snapshot(out) == before


def test_overwrite_replaces_the_run_and_its_stale_files(one_epoch, tmp_path):
    out = _copy(one_epoch, tmp_path)
    (out / "eval.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    assert main(["train", *RUN, "--model", "resnet20_eca", "--epochs", "1", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "run.json").read_text())["model"] == "resnet20_eca"
    assert json.loads((out / "summary.json").read_text())["model"] == "resnet20_eca"
    assert not (out / "eval.json").exists() and (out / "notes.txt").read_text() == "mine"


def test_resume_dir_alone_continues_with_the_stored_recipe_and_may_add_epochs(one_epoch, tmp_path, capsys):
    out = _copy(one_epoch, tmp_path)
    assert main(["train", "--resume", str(out), "--epochs", "2", "--threads", "1", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_done"] == 2 and summary["model_kwargs"] == {"stem": "imagenet"}
    assert summary["config"]["batch_size"] == 64
    with safe_open(str(out / "last.safetensors"), "pt") as f:
        assert f.metadata()["epoch"] == "2"


@pytest.mark.parametrize("args, message", [
    (["--lr", "0.3"], "lr was None, now 0.3"),
    (["--model", "resnet20_se", "--batch-size", "32"], "model was 'resnet20', now 'resnet20_se', batch_size was 64"),
])
def test_resume_dir_names_the_settings_that_differ_from_the_stored_recipe(one_epoch, tmp_path, capsys, args, message):
    out = _copy(one_epoch, tmp_path)
    before = _snapshot(out)
    err = _one_error_line(capsys, 2, main(["train", "--resume", str(out), *args]))
    assert f"cannot resume '{out}' with other settings: {message}" in err
    assert _snapshot(out) == before


def test_resume_refuses_fewer_epochs_than_done(one_epoch, tmp_path, capsys):
    out = _copy(one_epoch, tmp_path)
    assert main(["train", "--resume", str(out), "--epochs", "2", "--threads", "1", "--no-progress"]) == 0
    capsys.readouterr()
    err = _one_error_line(capsys, 2, main(["train", "--resume", str(out), "--epochs", "1"]))
    assert "cannot resume with epochs=1: the run has done 2 epochs already" in err


def _signals_at(calls: dict, monkeypatch):
    """Send SIGINT from inside the given training steps (numbered from 1), as many times as asked."""
    seen = {"step": 0}
    all_sum = trainer.all_sum

    def counting(values, d):
        seen["step"] += 1
        for _ in range(calls.get(seen["step"], 0)):
            os.kill(os.getpid(), signal.SIGINT)
        return all_sum(values, d)

    monkeypatch.setattr(trainer, "all_sum", counting)


def test_first_ctrl_c_says_so_at_once_saves_and_resume_dir_finishes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    _signals_at({5: 1}, monkeypatch)
    assert main(["train", *RUN, "--epochs", "1", "--out", str(out)]) == 130
    captured = capsys.readouterr()
    assert "Ctrl-C: stopping at the end of the current step and saving" in captured.err
    assert "press Ctrl-C again to quit at once" in captured.err
    assert f"continue with `attnvision train --resume {out}`" in captured.err
    with safe_open(str(out / "last.safetensors"), "pt") as f:
        meta = f.metadata()
    assert (meta.pop("epoch"), meta.pop("batch")) == ("0", "5") and list(meta) == ["attnvision.model"]
    monkeypatch.undo()
    assert main(["eval", "--run", str(out), "--threads", "1"]) == 0  # says what it measures
    assert (f"eval: {out} has not finished (resnet20 on digits, interrupted): evaluating its last saved weights "
            f"(0 of 1 epochs done, 5 batches into the next)") in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--threads", "1", "--no-progress"]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs_done"] == 1


def test_second_ctrl_c_exits_130_without_traceback_keeping_the_last_complete_checkpoint(one_epoch, tmp_path, capsys,
                                                                                        monkeypatch):
    out = _copy(one_epoch, tmp_path)
    before = {k: v for k, v in _snapshot(out).items() if k.endswith((".safetensors", ".pt"))}
    _signals_at({3: 2}, monkeypatch)
    rc = main(["train", "--resume", str(out), "--epochs", "2", "--threads", "1", "--no-progress"])
    assert rc == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"attnvision train: stopped at once by a second Ctrl-C; {out} keeps its last complete checkpoint" in err
    after = _snapshot(out)
    assert {k: after[k] for k in before} == before
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_second_ctrl_c_during_a_save_leaves_the_previous_state_whole(one_epoch, tmp_path, capsys, monkeypatch):
    out = _copy(one_epoch, tmp_path)
    before = (out / "last.state.pt").read_bytes()
    def interrupted_save(path, state):
        def write_then_interrupt(tmp):
            torch.save(state, tmp)
            os.kill(os.getpid(), signal.SIGINT)
        trainer.ckpt.atomic_write(path, write_then_interrupt)

    _signals_at({2: 1}, monkeypatch)  # the first Ctrl-C asks for the save
    monkeypatch.setattr(trainer.ckpt, "save_state", interrupted_save)
    assert main(["train", "--resume", str(out), "--epochs", "2", "--threads", "1", "--no-progress"]) == 130
    assert (out / "last.state.pt").read_bytes() == before
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


@pytest.mark.parametrize("args, message", [
    (["--model-kwargs", '{"in_chans": 3}'], "--model-kwargs sets in_chans=3 but the data has 1 channels; leave "
                                            "in_chans out of --model-kwargs"),
    (["--model-kwargs", '{"num_classes": 5}'], "--model-kwargs sets num_classes=5 but the data has 10 classes"),
    (["--input-size", "3", "32", "32"], "input_size 3x32x32 does not fit the data 'digits', whose images are 1x32x32"),
    (["--input-size", "1", "64", "64"], "input_size 1x64x64 does not fit the data 'digits'"),
])
def test_settings_that_contradict_the_data_are_one_line_errors(tmp_path, capsys, args, message):
    out = tmp_path / "r"
    err = _one_error_line(capsys, 2, main(["train", *RUN, "--epochs", "1", "--out", str(out), *args]))
    assert message in err
    assert not out.exists()


def test_cuda_device_without_a_gpu_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = _one_error_line(capsys, 2, main(["train", *RUN, "--epochs", "1", "--out", str(tmp_path / "r"),
                                           "--device", "cuda"]))
    assert "device 'cuda' asked for, but torch finds no CUDA GPU here" in err and "--device cpu" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, message", [
    (["--epochs", "1"], "--model is required (on the command line or in --config FILE; or --resume DIR to continue "
                        "a run)"),
    (["--resume", "nowhere"], "no run directory at 'nowhere'"),
    (["--resume", "a", "--out", "b"], "--resume a and --out b name two directories"),
    (["--model", "resnet20", "--epochs", "1", "--resume", "--overwrite"],
     "--resume and --overwrite exclude each other"),
])
def test_missing_or_contradictory_options_are_one_line_errors(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    err = _one_error_line(capsys, 2, main(["train", *args]))
    assert message in err
    assert os.listdir(tmp_path) == []


def test_a_run_without_a_record_resumes_from_the_options_given(one_epoch, tmp_path, capsys):
    out = _copy(one_epoch, tmp_path)
    (out / "run.json").unlink()  # as written before run records existed
    err = _one_error_line(capsys, 2, main(["train", "--resume", str(out)]))
    assert "--model and --epochs are required" in err
    assert main(["train", *RUN, "--epochs", "2", "--resume", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs_done"] == 2


def test_resume_from_a_damaged_state_is_a_one_line_error_that_writes_nothing(one_epoch, tmp_path, capsys):
    out = _copy(one_epoch, tmp_path)
    state = out / "last.state.pt"
    state.write_bytes(state.read_bytes()[:5000])
    before = _snapshot(out)
    err = _one_error_line(capsys, 2, main(["train", "--resume", str(out)]))
    assert "cannot resume: " in err and "is not a valid training state: it is truncated or damaged" in err
    assert "--overwrite" in err and "weights_only" not in err
    assert _snapshot(out) == before


def test_second_ctrl_c_before_any_save_says_nothing_was_saved(tmp_path, capsys, monkeypatch):
    _signals_at({2: 2}, monkeypatch)
    assert main(["train", *RUN, "--epochs", "1", "--out", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err
    assert "stopped at once by a second Ctrl-C, before anything was saved; start the run again" in err
    assert "Traceback" not in err
