"""train() leaves the process as it found it: threads, deterministic mode, cuDNN flags, environment, SIGINT and
SIGTERM handlers."""
from __future__ import annotations

import os
import signal

import torch
from torch import nn

from attnvision.data import create_dataset
from attnvision.train import TrainConfig, train
from attnvision.train.process import scoped_process_state


def _state():
    return (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
            torch.backends.cudnn.deterministic, os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
            signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))


def test_scoped_process_state_restores_what_the_block_changed(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = _state()
    with scoped_process_state(threads=1, deterministic=True):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and not torch.backends.cudnn.benchmark
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    assert _state() == before


def test_train_leaves_threads_determinism_cudnn_and_environment_as_they_were(monkeypatch, tmp_path):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)  # what a deterministic run turns off
    before = _state()
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    summary = train(TrainConfig(data="digits", epochs=1, batch_size=256, threads=1, deterministic=True,
                                progress=False, out=str(tmp_path / "run")), model=model,
                    train_set=create_dataset("digits", "train"), val_set=create_dataset("digits", "val"))
    assert not summary["interrupted"] and (tmp_path / "run" / "summary.json").is_file()
    assert _state() == before


def test_a_sigterm_handler_of_the_program_is_left_to_it():
    """SIGTERM stops a run only where nothing else handles it: submitit's jobs, for one, requeue themselves."""
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
        summary = train(TrainConfig(data="digits", epochs=1, batch_size=256, threads=1, progress=False), model=model,
                        train_set=create_dataset("digits", "train"), val_set=create_dataset("digits", "val"),
                        on_step=lambda step: step == 2 and os.kill(os.getpid(), signal.SIGTERM))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [signal.SIGTERM] and not summary["interrupted"] and summary["stop_signal"] is None
