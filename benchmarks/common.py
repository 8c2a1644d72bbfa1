"""What the benchmarks share: the library's timing helpers (``attnvision.profiling.benchmark``:
interleaved repeats, medians, one inference call, one training step) and a results file.

Ours and the peer run in the same process, alternating repeat by repeat, so that any load
from other processes or thermal drift falls on both alike; the median of the repeats is kept.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnvision._table import format_table  # noqa: E402
from attnvision.io import atomic_write_text  # noqa: E402
from attnvision.profiling.benchmark import infer_fn, interleaved_medians, train_fn  # noqa: E402,F401

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    """The CPU's model name (ratios between implementations move from one CPU model to another)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_line() -> str:
    return (f"{cpu_name()}, {os.cpu_count()} CPU cores, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, Python {platform.python_version()}")


def write_results(name: str, title: str, headers, rows, notes: str = "") -> str:
    text = f"# {title}\n\nMachine: {machine_line()}.\n\n{format_table(headers, rows, markdown=True)}\n"
    if notes:
        text += f"\n{notes.strip()}\n"
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / f"{name}.md", text)
    return text
