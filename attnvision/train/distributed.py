"""Multi-process training on PyTorch's own engine (torchrun + DistributedDataParallel).

``torchrun --nproc_per_node=N -m attnvision train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init` reads them and joins the
process group (nccl on GPUs, gloo on CPU). Without them everything runs in one process.

Elastic runs: under ``torchrun --max-restarts N`` a process that dies (killed, or raising) makes torchrun
restart the whole group; :func:`elastic_restart` tells the restarted processes, and the trainer then
continues the run in ``out`` from its last saved state (:func:`attnvision.train.trainer.train`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | None, who: str) -> torch.device:
    """``device`` as a ``torch.device`` (default: cuda when available, else cpu); a clear error
    for a malformed name or a GPU this machine does not have."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{who}: device must be like 'cpu', 'cuda' or 'cuda:1', got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{who}: device {device!r} asked for, but torch finds no CUDA GPU here (torch "
                             f"{torch.__version__}); use --device cpu, or leave --device out")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{who}: device {device!r} asked for, but there are {torch.cuda.device_count()} "
                             f"CUDA GPUs (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif dev.type not in ("cpu", "mps"):
        raise ValueError(f"{who}: device must be cpu or cuda, got {device!r}")
    return dev


def init(device: str | None = None) -> Dist:
    """Join the process group described by torchrun's environment variables, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device, "train")
    if world <= 1:
        return Dist(device=dev)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        # TorchElastic keeps its store across restarts: the process group's keys of a failed attempt (the
        # old processes' addresses) would still be there, and a restarted rank could connect to a dead peer
        # (gloo's full mesh: "Connection refused"); each attempt gets keys of its own
        store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world))
        store = dist.PrefixStore(f"attnvision/attempt{elastic_restart()}/", store)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", store=store, rank=rank, world_size=world)
    return Dist(rank=rank, world_size=world, local_rank=local, device=dev)


def elastic_restart() -> int:
    """How many times TorchElastic (``torchrun --max-restarts N``) has restarted this job's processes after
    one of them failed: 0 on the first attempt, and outside torchrun."""
    count = os.environ.get("TORCHELASTIC_RESTART_COUNT", "")
    return int(count) if count.isdigit() else 0


def elastic_run_id() -> str | None:
    """The id of the torchrun job this process belongs to (its rendezvous id; ``--standalone`` draws a new
    one per launch), or None outside torchrun."""
    return os.environ.get("TORCHELASTIC_RUN_ID")


def all_sum(values: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum a tensor over all ranks (identity in one process)."""
    if d.enabled:
        values = values.clone()
        dist.all_reduce(values)
    return values


def all_gather_objects(obj, d: Dist) -> list:
    """``[rank 0's obj, rank 1's obj, ...]`` on every rank (``[obj]`` in one process); for results that are
    not tensors of one shape, such as a detector's per-image predictions."""
    if not d.enabled:
        return [obj]
    gathered = [None] * d.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


class DistributedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation over the union of every process's batch, on any device and backend.

    PyTorch's ``SyncBatchNorm`` runs only on GPUs. This one reduces with the autograd-aware
    ``torch.distributed.nn.functional.all_reduce`` (gloo on CPU included): the mean is
    ``Σx / N`` and the variance ``Σ(x − mean)² / N`` over all N values of a channel in the global
    batch, and the backward pass sums the gradients of those statistics over the processes, so
    the weights equal one process's with the same global batch (up to float rounding). Running
    statistics are updated as ``nn.BatchNorm`` does (unbiased variance). Outside training, or in
    one process, it is ``nn.BatchNorm``.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"DistributedBatchNorm: expected input of shape (B, C, ...), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = all_reduce(torch.tensor(float(x.numel() // x.shape[1]), device=x.device))
        mean = all_reduce(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = all_reduce(centred.square().sum(dims)) / count
        if self.track_running_stats and self.running_mean is not None:
            # registered with running_mean (nn.BatchNorm's buffers, all or none)
            assert self.num_batches_tracked is not None and self.running_var is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.item()
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                unbiased = var.detach() * count / (count - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``model`` normalised over the global batch: ``nn.SyncBatchNorm`` on GPUs,
    :class:`DistributedBatchNorm` elsewhere (same parameters, buffers and state_dict keys)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, DistributedBatchNorm):
            new = DistributedBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats, device=device)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(model, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return model


def broadcast_buffers(model: nn.Module, d: Dist) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank. DDP sends them at the start of
    each forward, so after the last step of an epoch each rank holds its own; this makes every rank
    evaluate, and rank 0 save, the same model."""
    if d.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
