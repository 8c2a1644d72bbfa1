"""Gradient accumulation: N micro-batches of B make the optimiser step of one batch of N·B (float64, a model
without batch statistics), the schedule counts optimiser steps, the epoch's short last group is averaged
over its own micro-batches, a run interrupted and resumed ends where the uninterrupted one does, and two
processes accumulating without synchronising their micro-steps equal one."""
from __future__ import annotations

import csv
import json
import os
import signal
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors import safe_open
from torch import nn

from attnvision.cli.main import main
from attnvision.data import Synthetic
from attnvision.train import TrainConfig, train
from attnvision.train.distributed import shutdown

SHAPE, CLASSES = (1, 6, 6), 4


class Net(nn.Module):
    """conv → ReLU → pool → linear: no batch statistics and no randomness, so the gradient of a batch is the
    mean of its samples' gradients."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 5, 3, padding=1)
        self.fc = nn.Linear(5, CLASSES)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _data(size, identical=False):
    train_set, val_set = Synthetic("train", image_shape=SHAPE, num_classes=CLASSES, size=size), \
        Synthetic("val", image_shape=SHAPE, num_classes=CLASSES, size=8)
    if identical:  # every micro-batch then has the same gradient, whatever the order
        train_set.images[:], train_set.labels[:] = train_set.images[0], train_set.labels[0]
    return train_set, val_set


def _run(*, batch_size, accum_steps, opt, size, epochs=1, identical=False, out=None, on_step=None, resume=False):
    torch.manual_seed(0)
    model = Net()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    train_set, val_set = _data(size, identical)
    summary = train(TrainConfig(model="net", data="synthetic", epochs=epochs, batch_size=batch_size,
                                accum_steps=accum_steps, opt=opt, lr=0.1, weight_decay=0.01, momentum=0.9,
                                sched="cosine", progress=False, threads=1, device="cpu",
                                out=str(out) if out else None, resume=resume),
                    model=model, train_set=train_set, val_set=val_set, on_step=on_step)
    return model.state_dict(), initial, summary


def _assert_equal(a, b, tol=1e-12):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == torch.float64
        assert (a[k] - b[k]).abs().max().item() <= tol, k


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_two_micro_batches_of_4_make_the_step_of_one_batch_of_8(float64, opt):
    steps = []
    accumulated, initial, _ = _run(batch_size=4, accum_steps=2, opt=opt, size=8, on_step=steps.append)
    large, _, _ = _run(batch_size=8, accum_steps=1, opt=opt, size=8)
    assert steps == [1]
    assert (accumulated["fc.weight"] - initial["fc.weight"]).abs().max() > 1e-3  # the step moved the weights
    _assert_equal(accumulated, large)
    # without averaging (the gradient of 2 × 4 samples summed) the step would differ
    doubled, _, _ = _run(batch_size=4, accum_steps=1, opt=opt, size=8)
    assert (doubled["fc.weight"] - large["fc.weight"]).abs().max() > 1e-3


def test_the_schedule_counts_optimiser_steps_over_epochs(float64):
    steps = []
    accumulated, _, _ = _run(batch_size=4, accum_steps=3, opt="sgd", size=24, epochs=2, on_step=steps.append)
    large, _, _ = _run(batch_size=12, accum_steps=1, opt="sgd", size=24, epochs=2)
    assert steps == [1, 2, 3, 4]  # 6 micro-batches an epoch, 2 optimiser steps
    _assert_equal(accumulated, large)


def test_a_short_last_group_is_averaged_over_its_own_micro_batches(float64):
    # 3 micro-batches, accumulation 2: groups of 2 and 1, two steps, each the gradient of one identical sample
    steps = []
    accumulated, _, _ = _run(batch_size=4, accum_steps=2, opt="sgd", size=12, identical=True, on_step=steps.append)
    plain, _, _ = _run(batch_size=4, accum_steps=1, opt="sgd", size=8, identical=True)
    assert steps == [1, 2]
    _assert_equal(accumulated, plain)


def test_resume_after_ctrl_c_with_accumulation_reaches_the_same_weights(float64, tmp_path):
    full, _, _ = _run(batch_size=4, accum_steps=2, opt="sgd", size=24, epochs=2, out=tmp_path / "full")

    def interrupt(step):
        if step == 5:  # the second of epoch 2's three optimiser steps (of 2 micro-batches each)
            os.kill(os.getpid(), signal.SIGINT)

    _, _, cut = _run(batch_size=4, accum_steps=2, opt="sgd", size=24, epochs=2, out=tmp_path / "cut",
                     on_step=interrupt)
    assert cut["interrupted"]
    with safe_open(str(tmp_path / "cut" / "last.safetensors"), "pt") as f:
        assert f.metadata() == {"epoch": "1", "batch": "4"}  # saved after the step, in micro-batches
    resumed, _, _ = _run(batch_size=4, accum_steps=2, opt="sgd", size=24, epochs=2, out=tmp_path / "cut",
                         resume=True)
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


def test_accum_steps_must_be_a_positive_integer():
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=f"accum_steps must be a positive integer, got {bad!r}"):
            train(TrainConfig(model="resnet20", data="digits", epochs=1, accum_steps=bad, device="cpu",
                              progress=False))


# -- two processes ------------------------------------------------------------------------------------------

def _rank(rank, world, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_default_dtype(torch.float64)
    skipped = []  # the micro-steps whose gradients DDP was told not to average
    no_sync = nn.parallel.DistributedDataParallel.no_sync

    def counting(self):
        skipped.append(1)
        return no_sync(self)

    nn.parallel.DistributedDataParallel.no_sync = counting
    weights, _, _ = _run(batch_size=4, accum_steps=3, opt="sgd", size=24, epochs=1)
    torch.save(dict(weights=weights, skipped=len(skipped)), os.path.join(out, f"rank{rank}.pt"))
    shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_accumulating_equal_one_process_with_the_same_global_batch(float64, tmp_path):
    mp.start_processes(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    one, _, _ = _run(batch_size=12, accum_steps=1, opt="sgd", size=24, epochs=1)
    for r in ranks:  # 6 micro-batches of 2 per rank in 2 groups of 3: the first 2 of each group unsynchronised
        assert r["skipped"] == 4
        _assert_equal(r["weights"], one)


def test_the_train_command_records_accum_steps_and_layer_decay(tmp_path):
    assert main(["train", "--model", "resnet20", "--data", "synthetic:1x8x8", "--epochs", "1", "--batch-size", "32",
                 "--accum-steps", "2", "--layer-decay", "0.8", "--sched", "constant", "--threads", "1",
                 "--no-progress", "--out", str(tmp_path)]) == 0
    config = json.loads((tmp_path / "run.json").read_text())["config"]
    assert config["accum_steps"] == 2 and config["layer_decay"] == 0.8
    with open(tmp_path / "metrics.csv") as f:
        assert float(next(csv.DictReader(f))["lr"]) == 0.1  # the head's rate: SGD's default, unscaled
