"""Run loggers (``--logger csv,tensorboard,wandb``): the default CSV files alone, TensorBoard events read back
with TensorBoard's own reader, W&B offline runs read back from their record files, resumption, rank 0 only,
one-line errors for unknown names and missing libraries."""
from __future__ import annotations

import csv
import dataclasses
import glob
import json
import struct
import sys
import time

import pytest
import torch

from attnvision.cli.main import main
from attnvision.data import create_dataset
from attnvision.train import TrainConfig, train
from attnvision.train import trainer as trainer_module
from attnvision.train.config import config_from_dict
from attnvision.train.distributed import Dist
from attnvision.train.loggers import LOGGERS, WANDB_ID, RunLogger, logger_names
from test_trainer import Tiny, _tiny_cfg


def _run(out, logger="csv", epochs=1, resume=False):
    torch.manual_seed(0)
    cfg = dataclasses.replace(_tiny_cfg(out), logger=logger, epochs=epochs, resume=resume)
    return train(cfg, model=Tiny(), train_set=create_dataset("digits", "train"),
                 val_set=create_dataset("digits", "val"))


def _csv_rows(out):
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_csv_is_the_default_and_nothing_else_is_written(tmp_path):
    assert TrainConfig().logger == "csv"
    _run(tmp_path)
    rows = _csv_rows(tmp_path)
    assert [r["epoch"] for r in rows] == ["1"]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    # tensorboard is importable here, yet no events are written unless asked for
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "wandb").exists()
    assert not (tmp_path / WANDB_ID).exists()


def _events(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_tensorboard_events_hold_every_epoch_the_config_and_the_summary(tmp_path):
    pytest.importorskip("tensorboard")
    summary = _run(tmp_path, "tensorboard", epochs=2)
    assert not (tmp_path / "metrics.csv").exists()  # only the loggers asked for
    events = _events(tmp_path / "tensorboard")
    acc = events.Scalars("val_acc1")
    assert [e.step for e in acc] == [1, 2]
    assert acc[-1].value == pytest.approx(summary["val_acc1"], rel=1e-6)
    assert [e.step for e in events.Scalars("train_loss")] == [1, 2]
    (text,) = events.Tensors("config/text_summary")
    assert json.loads(text.tensor_proto.string_val[0].decode())["logger"] == "tensorboard"
    (best,) = events.Scalars("summary/best_val_acc1")
    assert best.value == pytest.approx(summary["best_val_acc1"], rel=1e-6) and best.step == 2
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model"].string_value == "tiny" and start.hparams["lr"].number_value == 0.05


def test_a_resumed_run_continues_its_tensorboard_events_and_csv_rows(tmp_path):
    pytest.importorskip("tensorboard")
    _run(tmp_path, "csv,tensorboard", epochs=1)
    summary = _run(tmp_path, "csv,tensorboard", epochs=2, resume=True)
    acc = _events(tmp_path / "tensorboard").Scalars("val_acc1")
    assert [e.step for e in acc] == [1, 2]
    rows = _csv_rows(tmp_path)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert [e.value for e in acc] == pytest.approx([float(r["val_acc1"]) for r in rows], rel=1e-5)
    assert summary["epochs_done"] == 2


def _wandb_records(path):
    """The records of an offline W&B run file: a 7-byte header, then 32 KiB blocks of chunks (crc32, length,
    type: full, first, middle, last), as in LevelDB's log format."""
    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, part, records = 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 or pos + 7 + length > len(data):  # the end, or a chunk still being written
            break
        part += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(part)
            records.append(record)
            part = b""
    return records


def _finished_wandb_records(path, timeout=30.0):
    """The records of ``path`` once its ``exit`` record is there: W&B's service process may still be writing
    the file when ``finish()`` has returned."""
    deadline = time.monotonic() + timeout
    while True:
        records = _wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def _wandb_values(records, kind):
    """``{key: value}`` of the run's config updates, history rows or summary updates."""
    values = []
    for record in records:
        if record.WhichOneof("record_type") != kind:
            continue
        if kind == "history":
            values.append({i.key or i.nested_key[0]: json.loads(i.value_json) for i in record.history.item})
        elif kind == "run":
            values.append({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "summary":
            values.append({i.key or i.nested_key[0]: json.loads(i.value_json) for i in record.summary.update})
        elif kind == "config":
            values.append({i.key: json.loads(i.value_json) for i in record.config.update})
    return values


@pytest.mark.slow  # two W&B runs: about 8 s, most of it starting and stopping W&B's service
def test_wandb_offline_run_holds_config_history_and_summary_and_resumes_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wb").mkdir()
    out = tmp_path / "run"
    _run(out, "csv,wandb", epochs=1)
    run_id = (out / WANDB_ID).read_text().strip()
    summary = _run(out, "csv,wandb", epochs=2, resume=True)
    files = sorted(glob.glob(str(tmp_path / "wb" / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb")))
    assert len(files) == 2  # the first run and its continuation, under one id
    first, second = (_finished_wandb_records(f) for f in files)
    config = {k: v for part in _wandb_values(first, "run") + _wandb_values(first, "config") for k, v in part.items()}
    assert config["model"] == "tiny" and config["lr"] == 0.05 and config["epochs"] == 1
    history = [h for h in _wandb_values(first, "history") + _wandb_values(second, "history") if "val_acc1" in h]
    rows = _csv_rows(out)
    assert [h["_step"] for h in history] == [1, 2]
    assert [h["val_acc1"] for h in history] == pytest.approx([float(r["val_acc1"]) for r in rows], rel=1e-5)
    final = {k: v for part in _wandb_values(second, "summary") for k, v in part.items()}
    assert final["best_val_acc1"] == pytest.approx(summary["best_val_acc1"]) and final["epochs_done"] == 2
    assert not (out / "wandb").exists()  # WANDB_DIR is honoured


def test_only_rank_0_logs(tmp_path, monkeypatch):
    opened = []

    class Counting(RunLogger):
        def __init__(self, out, **kw):
            super().__init__(out, **kw)
            opened.append(out)

    LOGGERS.register("counting_test", Counting)
    try:
        _run(tmp_path / "main", "csv,counting_test")
        assert opened == [str(tmp_path / "main")]
        # a process of rank 1 (in a world of one, so that it runs alone) trains but writes and logs nothing
        monkeypatch.setattr(trainer_module, "init", lambda device: Dist(rank=1))
        _run(tmp_path / "other", "csv,counting_test")
        assert opened == [str(tmp_path / "main")] and not (tmp_path / "other").exists()
    finally:
        LOGGERS.unregister("counting_test")


def test_unknown_logger_names_are_one_line_errors_with_a_suggestion(capsys):
    assert logger_names("csv, TensorBoard") == ["csv", "tensorboard"]
    with pytest.raises(ValueError, match=r"unknown name 'tensorbord'; did you mean 'tensorboard'\?"):
        logger_names("csv,tensorbord")
    with pytest.raises(ValueError, match="each logger once"):
        logger_names("csv,csv")
    with pytest.raises(ValueError, match="comma-separated names"):
        config_from_dict({"logger": "csv,"})
    assert main(["train", "--model", "resnet20", "--epochs", "1", "--logger", "csv,wandbb", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'wandb'?" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name, module, extra", [("tensorboard", "tensorboard", "tb"), ("wandb", "wandb", "wandb")])
def test_a_logger_whose_library_is_missing_names_the_extra(tmp_path, monkeypatch, capsys, name, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    assert main(["train", "--model", "resnet20", "--data", "digits", "--epochs", "1", "--logger", f"csv,{name}",
                 "--out", str(tmp_path / "run"), "--threads", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"attnvision train: error: logger '{name}' needs {module}: pip install "
                   f"\"attnvision[{extra}]\"")
    assert not (tmp_path / "run").exists()  # refused before anything was written
