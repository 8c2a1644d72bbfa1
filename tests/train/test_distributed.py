"""Two CPU processes (gloo), started as torchrun would start them: the same weights on both ranks,
and the same as one process with the same global batch."""
from __future__ import annotations

import os
import socket

import pytest

import torch
import torch.multiprocessing as mp
from torch import nn

from attnvision.data import Synthetic
from attnvision.train import TrainConfig, train
from attnvision.train.distributed import shutdown


class NoBN(nn.Module):
    """No batch statistics, so that per-rank batches give the same gradient as one global batch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def _cfg(out):
    return TrainConfig(model="noBN", data="synthetic", epochs=2, batch_size=32, lr=0.1, momentum=0.9,
                       weight_decay=1e-4, progress=False, threads=1, out=out, device="cpu")


def _data():
    kw = dict(image_shape=(1, 8, 8), num_classes=4, size=128)
    return Synthetic("train", **kw), Synthetic("val", **dict(kw, size=40))


def _rank(rank, world, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
    model = NoBN()
    train_set, val_set = _data()
    summary = train(_cfg(out if rank == 0 else None), model=model, train_set=train_set, val_set=val_set)
    torch.save(dict(summary=summary, weights=model.state_dict()), os.path.join(out, f"rank{rank}.pt"))
    shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_end_identical_and_equal_to_one_process_with_the_same_global_batch(tmp_path):
    out = str(tmp_path / "ddp")
    os.makedirs(out)
    mp.start_processes(_rank, args=(2, _free_port(), out), nprocs=2, join=True, start_method="spawn")
    ranks = [torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=True) for r in range(2)]
    a, b = ranks[0]["weights"], ranks[1]["weights"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    torch.manual_seed(0)
    model = NoBN()
    train_set, val_set = _data()
    single = train(_cfg(str(tmp_path / "single")), model=model, train_set=train_set, val_set=val_set)
    one = model.state_dict()
    assert a.keys() == one.keys()
    for k in one:
        torch.testing.assert_close(a[k], one[k], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(one["conv.weight"], NoBN().conv.weight)  # training moved the weights
    # metrics are summed over ranks: each rank reports the whole validation set, as one process does
    for r in ranks:
        assert r["summary"]["world_size"] == 2
        assert r["summary"]["val_acc1"] == single["val_acc1"]
        assert r["summary"]["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)
    assert os.path.isfile(os.path.join(out, "summary.json"))  # rank 0 wrote its files
