"""Top-1/top-5 accuracy, loss, per-class accuracy and the confusion matrix of a model on a dataset."""
from __future__ import annotations

import time
from collections.abc import Sized
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .distributed import Dist, all_sum


@dataclass
class EvalResult:
    loss: float
    acc1: float
    acc5: float
    count: int
    images_per_s: float
    confusion: torch.Tensor = field(repr=False)  # (num_classes, num_classes): rows true, columns predicted

    @property
    def per_class_acc(self) -> list[float]:
        totals = self.confusion.sum(1).clamp(min=1)
        return (self.confusion.diagonal() / totals * 100).tolist()

    def as_dict(self, per_class: bool = False) -> dict:
        out: dict[str, Any] = dict(loss=self.loss, acc1=self.acc1, acc5=self.acc5, count=self.count,
                                   images_per_s=self.images_per_s)
        if per_class:
            out["per_class_acc1"] = self.per_class_acc
            out["confusion"] = self.confusion.tolist()
        return out


class Shard(torch.utils.data.Sampler):
    """Indices ``rank, rank + world, ...``: every sample is seen by exactly one rank, none twice."""

    def __init__(self, n: int, d: Dist):
        self.indices = list(range(d.rank, n, d.world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 256, num_classes: int | None = None,
             device=None, workers: int = 0, amp_dtype: torch.dtype | None = None, d: Dist | None = None,
             progress: bool = False) -> EvalResult:
    """Evaluate ``model`` (in eval mode) on all of ``dataset``; with several ranks, each sees a shard
    and the sums are reduced, so every rank returns the same numbers."""
    d = d or Dist()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    num_classes = num_classes or getattr(dataset, "num_classes")
    loader = DataLoader(dataset, batch_size=batch_size, sampler=Shard(len(cast(Sized, dataset)), d),
                        num_workers=workers, generator=torch.Generator())
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss, top-1, top-5, count
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    seconds = 0.0
    if progress and d.is_main:
        from tqdm import tqdm
        loader = tqdm(loader, desc="eval", leave=False, dynamic_ncols=True)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - start
        logits = logits.float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit = top == y[:, None]
        sums += torch.tensor([F.cross_entropy(logits, y, reduction="sum").item(), hit[:, 0].sum().item(),
                              hit.any(1).sum().item(), len(y)], dtype=torch.float64)
        confusion += torch.bincount((y * num_classes + top[:, 0]).cpu(), minlength=num_classes ** 2
                                    ).reshape(num_classes, num_classes)
    model.train(was_training)
    sums = all_sum(sums.to(d.device), d).cpu()
    confusion = all_sum(confusion.to(d.device), d).cpu()
    timing = all_sum(torch.tensor([seconds], dtype=torch.float64, device=d.device), d).item() / d.world_size
    n = max(sums[3].item(), 1)
    return EvalResult(loss=sums[0].item() / n, acc1=100 * sums[1].item() / n, acc5=100 * sums[2].item() / n,
                      count=int(sums[3].item()), images_per_s=sums[3].item() / max(timing, 1e-9),
                      confusion=confusion)
