"""The results of a comparison: ``results.csv``, ``results.md`` (means ± standard deviations, paired
differences to the baseline with 95% intervals) and ``results.png``.

What a task reports (its metric columns, the one ranked and paired, how it is printed) comes from the
task itself (:class:`attnvision.train.tasks.Task`), read into a :class:`TaskColumns`.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
from dataclasses import dataclass

import torch

from .._table import format_table
from ..io import atomic_write, atomic_write_text
from ..train.stats import Paired, paired_difference
from ..train.tasks import TASKS, Task, get_task

PAIRED_COLUMNS = ("val_acc1", "cam_energy")  # reported as paired differences against the baseline

SPEED_COLUMNS = ("train_images_per_s", "infer_images_per_s")

BASE_COLUMNS = ("model", "settings", "seed", "val_acc1", "val_acc5", "best_val_acc1", "params", "macs",
                "train_images_per_s", "infer_images_per_s", "seconds")


@dataclass(frozen=True)
class TaskColumns:
    """What a comparison of one task reports: its metric columns, the one ranked and paired (``primary``),
    how it is printed (``label``, ``digits``)."""

    metrics: tuple[str, ...]
    primary: str
    label: str
    digits: int

    @property
    def base(self) -> tuple[str, ...]:
        return ("model", "settings", "seed", *self.metrics, "params", "macs", *SPEED_COLUMNS, "seconds")

    @property
    def paired(self) -> tuple[str, ...]:
        return (self.primary, *PAIRED_COLUMNS[1:])

    @classmethod
    def of(cls, task: Task) -> "TaskColumns":
        """What ``task`` declares: its ``compare_metrics``, ``best`` (ranked and paired), label and digits."""
        return cls(tuple(task.compare_metrics), task.best, task.compare_label, task.compare_digits)


def task_columns(rows: list[dict]) -> TaskColumns:
    """The :class:`TaskColumns` of a comparison's rows (told apart by their primary metric)."""
    for name in TASKS.names():
        spec = TaskColumns.of(get_task(name))
        if rows and spec.primary in rows[0]:
            return spec
    return TaskColumns.of(get_task("classification"))


class Results(list):
    """The rows :func:`compare` returns (one dict per run); ``partner`` maps each (model, settings)
    group to the baseline group it is paired with."""

    def __init__(self, rows: list[dict], partner: dict[tuple[str, str], tuple[str, str]]):
        super().__init__(rows)
        self.partner = partner


def _columns(rows: list[dict]) -> list[str]:
    base = task_columns(rows).base
    extra = [c for c in rows[0] if c not in base and any(r[c] is not None for r in rows)] if rows else []
    return [*base, *extra]


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def group(rows: list[dict], partner: dict[tuple[str, str], tuple[str, str]] | None = None) -> list[dict]:
    """Rows of the same model and settings merged: ``{col: (mean, std)}`` for every numeric column,
    ``n`` (the seeds), and ``paired``: ``{col: Paired}`` for the columns of :data:`PAIRED_COLUMNS`,
    the per-seed differences against the group's baseline (``partner[(model, settings)]``, by default
    the first group); the baseline group itself has ``paired = None``."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["settings"]), []).append(r)
    first = next(iter(groups), None)
    out = []
    for (model, setting), rs in groups.items():
        g = dict(model=model, settings=setting, n=len(rs))
        for c in _columns(rows)[3:]:
            values = [float(r[c]) for r in rs if r[c] is not None]
            g[c] = _mean_std(values) if values else None
        base = (partner or {}).get((model, setting), first)
        assert base is not None  # groups has a first key: this one's
        g["baseline"] = base
        g["paired"] = None if base == (model, setting) else {
            c: _paired(rs, groups[base], c) for c in task_columns(rows).paired if g.get(c) is not None}
        out.append(g)
    return out


def _paired(rows: list[dict], base_rows: list[dict], column: str) -> Paired:
    """``column`` of ``rows`` minus that of ``base_rows``, matched by seed."""
    base = {r["seed"]: r[column] for r in base_rows if r[column] is not None}
    seeds = sorted(r["seed"] for r in rows if r[column] is not None and r["seed"] in base)
    mine = {r["seed"]: r[column] for r in rows}
    return paired_difference([float(mine[k]) for k in seeds], [float(base[k]) for k in seeds])


def mean_cell(stat: tuple[float, float], n: int, digits: int = 2) -> str:
    """``mean ± std`` over seeds, or the single value for one seed (no spread to show)."""
    return f"{stat[0]:.{digits}f}" + (f" ± {stat[1]:.{digits}f}" if n > 1 else "")


def delta_cell(d: Paired | None, digits: int = 2) -> str:
    """``+1.20 [+0.31, +2.09] *``: the paired mean difference, its 95% interval, ``*`` when it excludes 0."""
    if d is None:
        return "baseline"
    if d.low is None:
        return f"{d.mean:+.{digits}f}"
    return f"{d.mean:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}]" + (" *" if d.excludes_zero else "")


def verdict(d: Paired | None, higher: str = "higher", lower: str = "lower") -> str:
    """The paired difference in words: beyond the seed spread (its interval excludes 0) or not."""
    if d is None:
        return "baseline"
    if d.low is None:
        return "one seed: no interval"
    if not d.excludes_zero:
        return "within seed spread"
    return (higher if d.mean > 0 else lower) + " beyond seed spread"


def _csv(rows: list[dict]) -> str:
    cols = _columns(rows)

    def cell(v):
        s = f"{v:.6g}" if isinstance(v, float) else "" if v is None else str(v)
        return f'"{s}"' if ("," in s or '"' in s) else s

    return "\n".join([",".join(cols)] + [",".join(cell(r[c]) for c in cols) for r in rows]) + "\n"


def _markdown(rows: list[dict], info: dict) -> str:
    groups = group(rows, info.get("partner"))
    spec = task_columns(rows)
    extra = _columns(rows)[len(spec.base):]
    if spec.primary == "val_acc1":
        metric_headers = ["val acc1 %", "Δ acc1 [95% CI]", "best acc1 %"]
    else:
        metric_headers = [spec.label, f"Δ {spec.label} [95% CI]", *spec.metrics[1:]]
    headers = ["model", "settings", "seeds", *metric_headers, "params", "MACs", "train img/s", "infer img/s"]
    for c in extra:
        headers += [c, f"Δ {c} [95% CI]"] if c in PAIRED_COLUMNS else [c]
    table = []
    for g in groups:
        n, paired = g["n"], g["paired"] or {}
        others = ["best_val_acc1"] if spec.primary == "val_acc1" else spec.metrics[1:]
        line = [f"`{g['model']}`", g["settings"], str(n), mean_cell(g[spec.primary], n, spec.digits),
                delta_cell(paired.get(spec.primary) if g["paired"] else None, spec.digits),
                *(mean_cell(g[c], n, spec.digits) for c in others),
                f"{int(g['params'][0]):,}", f"{g['macs'][0] / 1e6:.2f} M", f"{g['train_images_per_s'][0]:.0f}",
                f"{g['infer_images_per_s'][0]:.0f}"]
        for c in extra:
            line.append(mean_cell(g[c], n, 4) if g[c] is not None else "")
            if c in PAIRED_COLUMNS:
                line.append(delta_cell(paired.get(c), 4) if g["paired"] else "baseline")
        table.append(line)
    recipe = ", ".join(f"{k}={v}" for k, v in info["recipe"].items()) or "defaults"
    seeds = sorted({g["n"] for g in groups})
    spread = (f"mean ± std over {'/'.join(map(str, seeds))} seeds" if seeds != [1] else
              "one seed: single values, no spread and no interval")
    alone = info.get("speed", "alone" if spec.primary == "val_acc1" else "runs") == "alone"
    speed = (f"throughput measured after training, one model at a time, on {info.get('threads', '?')} thread(s)"
             if alone else "throughput of each run's own training and validation, mean over seeds")
    launcher = info.get("launcher", "local")
    where = (f"Machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {platform.machine()}" if launcher == "local"
             else f"Trained by the {launcher} launcher; compared on {os.cpu_count()} CPUs, torch {torch.__version__}")
    measured = ("Accuracy is" if spec.primary == "val_acc1" else
                f"{spec.label} ({spec.primary}; {', '.join(spec.metrics[1:])} beside it) is")
    return (f"Data `{info['data']}`, {info['epochs']} epochs, {spread}; recipe: {recipe}. {measured} the final "
            f"epoch's on the validation split. Δ: the mean over seeds of the difference to the baseline trained "
            f"with the same seed (same data order and initialisation seed), with its 95% Student-t interval; `*` "
            f"marks an interval that excludes 0 (a difference larger than the seed spread explains). MACs for one "
            f"image; {speed}. {where}; {info['jobs']} run(s) at a time.\n\n"
            + format_table(headers, table, markdown=True) + "\n")


def _plot(rows: list[dict], path: str) -> bool:
    try:
        import matplotlib
    except ImportError:
        print("compare: matplotlib is not installed (pip install 'attnvision[plot]'); results.png skipped",
              file=sys.stderr)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups, spec = group(rows), task_columns(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, key, label in ((axes[0], "macs", "MACs (M)"), (axes[1], "params", "parameters (M)")):
        for g in groups:
            x = g[key][0] / 1e6
            ax.errorbar(x, g[spec.primary][0], yerr=g[spec.primary][1], fmt="o", capsize=4,
                        label=g["model"] + ("" if g["settings"] == "-" else f" {g['settings']}"))
        ax.set_xlabel(label)
        ax.set_ylabel("val top-1 accuracy (%)" if spec.primary == "val_acc1" else f"val {spec.label}")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle(f"{'accuracy' if spec.primary == 'val_acc1' else spec.label} (mean ± std over seeds) against cost")

    def write(tmp):
        fig.savefig(tmp, format="png", dpi=110)

    atomic_write(path, write)
    plt.close(fig)
    return True


def write_results(rows: list[dict], out: str, info: dict) -> None:
    """``results.csv``, ``results.md`` and ``results.png`` under ``out``; ``info`` holds the data, epochs,
    recipe, jobs (and optionally threads and ``partner``, the baseline of each group)."""
    atomic_write_text(os.path.join(out, "results.csv"), _csv(rows))
    atomic_write_text(os.path.join(out, "results.md"), _markdown(rows, info))
    _plot(rows, os.path.join(out, "results.png"))
