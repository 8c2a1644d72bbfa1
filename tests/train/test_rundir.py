"""Run directories from Python: the record, the refusal to overwrite, and what may change on resume."""
from __future__ import annotations

import json

import pytest
from torch import nn

from attnvision.train import TrainConfig, train
from attnvision.loading import model_from_record
from attnvision.train.rundir import read_record
from attnvision.train.trainer import check_resumable


def _cfg(out, **kw):
    return TrainConfig(data="synthetic:1x16x16", epochs=1, batch_size=128, progress=False, threads=1, out=str(out),
                       **kw)


def _custom():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


def test_train_refuses_another_run_unless_overwrite(tmp_path):
    train(_cfg(tmp_path), model=_custom())
    with pytest.raises(ValueError, match=r"already holds a run \(a custom model on synthetic:1x16x16, finished"):
        train(_cfg(tmp_path), model=_custom())
    assert train(_cfg(tmp_path, overwrite=True), model=_custom())["epochs_done"] == 1


def test_a_custom_model_is_recorded_as_not_rebuildable(tmp_path):
    train(_cfg(tmp_path), model=_custom())
    record = read_record(str(tmp_path), "eval")
    assert record["model"] is None and record["pretrained_cfg"]["input_size"] == [1, 16, 16]
    with pytest.raises(ValueError, match="eval: the run trained a model passed to train"):
        model_from_record(record, "eval")


def test_a_registered_model_is_rebuilt_with_the_data_preprocessing(tmp_path):
    train(_cfg(tmp_path, model="resnet20"))
    record = json.loads((tmp_path / "run.json").read_text())
    model = model_from_record(record, "cam")
    assert model.pretrained_cfg["input_size"] == (1, 16, 16) and len(model.pretrained_cfg["mean"]) == 1
    assert model.conv1.in_channels == 1 and model.fc.out_features == 10


def test_resume_allows_more_epochs_only():
    stored = dict(model="m", lr=0.1, epochs=4)
    check_resumable(stored, dict(model="m", lr=0.1, epochs=8, workers=2), epochs_done=2)
    with pytest.raises(ValueError, match=r"lr was 0.1, now 0.2 \(only epochs may change"):
        check_resumable(stored, dict(model="m", lr=0.2, epochs=4), epochs_done=2)
    with pytest.raises(ValueError, match="epochs=1: the run has done 2 epochs already"):
        check_resumable(stored, dict(model="m", lr=0.1, epochs=1), epochs_done=2)
