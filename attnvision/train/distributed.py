"""Multi-process training on PyTorch's own engine (torchrun + DistributedDataParallel).

``torchrun --nproc_per_node=N -m attnvision train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init` reads them and joins the
process group (nccl on GPUs, gloo on CPU). Without them everything runs in one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return Dist(rank=rank, world_size=world, local_rank=local, device=dev)


def all_sum(values: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum a tensor over all ranks (identity in one process)."""
    if d.enabled:
        values = values.clone()
        dist.all_reduce(values)
    return values


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
