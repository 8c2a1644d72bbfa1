"""Two CPU processes (gloo), started as torchrun would start them. What holds: both ranks always end on
identical weights; they equal one process with the same global batch for models without BatchNorm, and
for models with BatchNorm when it is synchronised (``sync_bn``), never otherwise."""
from __future__ import annotations

import os
import socket

import pytest

import torch
import torch.multiprocessing as mp
from torch import nn

from attnvision.data import Synthetic
from attnvision.train import TrainConfig, train
from attnvision.train.distributed import DistributedBatchNorm, convert_sync_batchnorm, shutdown


class NoBN(nn.Module):
    """No batch statistics, so that per-rank batches give the same gradient as one global batch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


class WithBN(nn.Module):
    """Batch statistics in 2-D and 1-D, as in the ResNets and BAM's channel gate."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.fc1 = nn.Linear(6, 5, bias=False)
        self.bn1d = nn.BatchNorm1d(5)
        self.fc = nn.Linear(5, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.bn1d(self.fc1(torch.relu(self.bn(self.conv(x))).mean((2, 3))))))


MODELS = {"noBN": NoBN, "BN": WithBN}


def _cfg(out, sync_bn=False):
    return TrainConfig(model="tiny", data="synthetic", epochs=2, batch_size=32, lr=0.1, momentum=0.9,
                       weight_decay=1e-4, progress=False, threads=1, out=out, device="cpu", sync_bn=sync_bn)


def _data():
    kw = dict(image_shape=(1, 8, 8), num_classes=4, size=128)
    return Synthetic("train", **kw), Synthetic("val", **dict(kw, size=40))


def _rank(rank, world, port, out, kind, sync_bn):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
    model = MODELS[kind]()
    train_set, val_set = _data()
    summary = train(_cfg(out if rank == 0 else None, sync_bn), model=model, train_set=train_set, val_set=val_set)
    torch.save(dict(summary=summary, weights=model.state_dict()), os.path.join(out, f"rank{rank}.pt"))
    shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks_and_one_process(tmp_path, kind, sync_bn):
    out = str(tmp_path / "ddp")
    os.makedirs(out)
    mp.start_processes(_rank, args=(2, _free_port(), out, kind, sync_bn), nprocs=2, join=True, start_method="spawn")
    ranks = [torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=True) for r in range(2)]
    torch.manual_seed(0)
    model = MODELS[kind]()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    train_set, val_set = _data()
    single = train(_cfg(str(tmp_path / "single"), sync_bn), model=model, train_set=train_set, val_set=val_set)
    assert not torch.allclose(initial["fc.weight"], model.fc.weight)  # training moved the weights
    assert os.path.isfile(os.path.join(out, "summary.json"))  # rank 0 wrote its files
    return ranks, single, model.state_dict()


def _assert_ranks_identical(ranks):
    a, b = ranks[0]["weights"], ranks[1]["weights"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind,sync_bn", [("noBN", False), ("BN", True)])
def test_two_ranks_end_identical_and_equal_to_one_process_with_the_same_global_batch(tmp_path, kind, sync_bn):
    ranks, single, one = _two_ranks_and_one_process(tmp_path, kind, sync_bn)
    _assert_ranks_identical(ranks)
    a = ranks[0]["weights"]
    assert a.keys() == one.keys()
    for k in one:  # running statistics included
        torch.testing.assert_close(a[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
    # metrics are summed over ranks: each rank reports the whole validation set, as one process does
    for r in ranks:
        assert r["summary"]["world_size"] == 2
        assert r["summary"]["val_acc1"] == single["val_acc1"]
        assert r["summary"]["val_loss"] == pytest.approx(single["val_loss"], rel=1e-4)


def test_unsynchronised_batchnorm_keeps_ranks_identical_but_differs_from_one_process(tmp_path):
    ranks, _, one = _two_ranks_and_one_process(tmp_path, "BN", sync_bn=False)
    _assert_ranks_identical(ranks)
    # each rank normalises by its own half batch: the documented difference from one process
    assert not torch.allclose(ranks[0]["weights"]["conv.weight"], one["conv.weight"], atol=1e-4)


def test_converted_batchnorm_keeps_state_and_is_plain_batchnorm_in_one_process():
    model = WithBN().train()
    ref = WithBN().train()
    ref.load_state_dict(model.state_dict())
    convert_sync_batchnorm(model, torch.device("cpu"))
    assert isinstance(model.bn, DistributedBatchNorm) and isinstance(model.bn1d, DistributedBatchNorm)
    assert model.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(8, 1, 6, 6)
    torch.testing.assert_close(model(x), ref(x))
    torch.testing.assert_close(model.bn.running_var, ref.bn.running_var)


def _detector_rank(rank, world, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from attnvision.data.dense import ClutteredDigitsDense
    from attnvision.tasks.dense import DetectionTask

    cfg = TrainConfig(task="detection", model="fasterrcnn", backbone="resnet20", data="cluttered-digits-det",
                      epochs=1, batch_size=4, lr=3e-3, opt="adamw", progress=False, threads=1, device="cpu",
                      out=out if rank == 0 else None,
                      model_kwargs=dict(fpn_channels=16, box_head_width=32, backbone_kwargs=dict(stem="imagenet"),
                                        rpn_post_nms_top_n_train=50, rpn_post_nms_top_n_test=20))
    data = ClutteredDigitsDense("val", "detection", length=8)
    model = DetectionTask().build_model(cfg, data)
    torch.manual_seed(rank)  # each rank draws its own proposal samples: DDP still keeps the weights equal
    summary = train(cfg, model=model, train_set=data, val_set=data)
    torch.save(dict(summary=summary, weights=model.state_dict()), os.path.join(out, f"rank{rank}.pt"))
    shutdown()


@pytest.mark.slow
def test_two_ranks_train_one_detector_to_identical_weights_and_metrics(tmp_path):
    out = str(tmp_path / "ddp")
    os.makedirs(out)
    mp.start_processes(_detector_rank, args=(2, _free_port(), out), nprocs=2, join=True, start_method="spawn")
    ranks = [torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=True) for r in range(2)]
    _assert_ranks_identical(ranks)
    summaries = [r["summary"] for r in ranks]
    assert all(s["world_size"] == 2 and s["epochs_done"] == 1 for s in summaries)
    # each rank predicts half of the canvases; the gathered detections give every rank the same AP
    assert summaries[0]["val_map_50"] == summaries[1]["val_map_50"]
    assert summaries[0]["val_map"] == summaries[1]["val_map"]
    assert os.path.isfile(os.path.join(out, "summary.json")) and os.path.isfile(os.path.join(out, "best.safetensors"))
