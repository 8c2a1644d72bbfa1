"""Timing helpers shared by the benchmarks: interleaved repeats, medians, a results file.

Ours and the peer run in the same process, alternating repeat by repeat, so that any load
from other processes or thermal drift falls on both alike; the median of the repeats is kept.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnvision.cli._table import format_table  # noqa: E402
from attnvision.io import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, calling them in turn ``repeats`` times."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def machine_line() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, Python {platform.python_version()}")


def write_results(name: str, title: str, headers, rows, notes: str = "") -> str:
    text = f"# {title}\n\nMachine: {machine_line()}.\n\n{format_table(headers, rows, markdown=True)}\n"
    if notes:
        text += f"\n{notes.strip()}\n"
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / f"{name}.md", text)
    return text


def infer_fn(model, x):
    """One inference call (eval mode, no autograd) of ``model`` on ``x``."""
    model.eval()

    def run():
        with torch.inference_mode():
            model(x)
    return run


def train_fn(model, x, y, optimizer=torch.optim.SGD, **opt_kwargs):
    """One training step: forward, cross-entropy, backward, optimizer step."""
    model.train()
    opt = optimizer(model.parameters(), **(opt_kwargs or dict(lr=1e-3, momentum=0.9)))

    def run():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return run
