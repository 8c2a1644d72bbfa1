"""Fair comparisons: a grid of models × settings × seeds, trained with one recipe on one dataset.

``compare(models=["resnet20", "resnet20_cbam"], settings=parse_sets(["attn_kwargs.reduction=8,16"]))``
trains every combination (each in ``out/runs/<model>[__<settings>]/seed<k>``), skipping runs
that already finished and resuming those that were cut short, then writes:

- ``results.csv``: one row per run (``model, settings, seed, val_acc1, val_acc5, best_val_acc1,
  params, macs, train_images_per_s, infer_images_per_s, seconds`` and one column per
  registered run metric);
- ``results.md``: mean ± standard deviation over seeds of every metric, per model and setting;
- ``results.png``: accuracy against MACs and against parameters, with error bars.

On data with object boxes (``cluttered-digits``) two more columns say where each model looks:
``cam_energy`` (the fraction of Grad-CAM mass inside the digit's box) and ``pointing_game`` (the
share of images whose CAM peak falls in the box), from :func:`attnvision.explain.explanation_scores`.

More columns: ``register_run_metric(name, fn)`` adds a column computed after each run by
``fn(RunContext) -> float`` from the trained model (final weights, eval mode) and the
validation set; values are stored in the run's ``summary.json`` so reruns reuse them.

The default grid (``DEFAULT``) is the README's first command: a small ResNet baseline and the
same network with SE, ECA, BAM and CBAM on ``cluttered-digits``, 2 seeds.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..io import atomic_write, atomic_write_text
from .trainer import TrainConfig

DEFAULT = dict(
    models=["resnet20", "resnet20_se", "resnet20_eca", "resnet20_bam", "resnet20_cbam"],
    data="cluttered-digits", epochs=5, seeds=2,
    recipe=dict(batch_size=64, lr=0.1, opt="sgd", sched="cosine", model_kwargs=dict(stem="imagenet")),
)
BASE_COLUMNS = ("model", "settings", "seed", "val_acc1", "val_acc5", "best_val_acc1", "params", "macs",
                "train_images_per_s", "infer_images_per_s", "seconds")


@dataclass
class RunContext:
    """What a run metric sees: the trained model (final weights, eval mode), the validation set,
    the run's summary and directory."""

    model: nn.Module
    val_set: object
    summary: dict
    run_dir: str
    cache: dict = field(default_factory=dict)  # work shared by several metrics of one run


RUN_METRICS: dict[str, Callable[[RunContext], float | None]] = {}


def register_run_metric(name: str, fn: Callable[[RunContext], float | None]) -> None:
    """Add a ``name`` column to every comparison: ``fn(RunContext) -> float``, averaged over seeds.

    ``fn`` returns None where the metric does not apply (the column is then left out)."""
    if name in BASE_COLUMNS:
        raise ValueError(f"register_run_metric: {name!r} is a built-in column")
    RUN_METRICS[name] = fn


def _box_scores(ctx: RunContext) -> dict | None:
    """Grad-CAM energy in the object's box and pointing-game hits over the validation set, for data
    with boxes (``cluttered-digits``): where each model looks, as the CBAM paper compares in pictures."""
    if getattr(ctx.val_set, "boxes", None) is None:
        return None
    if "box_scores" not in ctx.cache:
        from ..explain import explanation_scores
        ctx.cache["box_scores"] = explanation_scores(ctx.model, ctx.val_set)
    return ctx.cache["box_scores"]


register_run_metric("cam_energy", lambda ctx: (_box_scores(ctx) or {}).get("energy_in_box"))
register_run_metric("pointing_game", lambda ctx: (_box_scores(ctx) or {}).get("pointing_game"))


def parse_sets(sets: list[str] | None) -> list[dict]:
    """``["attn_kwargs.reduction=8,16", "train.lr=0.1"]`` → the grid of settings (a list of dicts).

    Keys are dotted paths into the model's keyword arguments, or ``train.FIELD`` for a field of
    :class:`TrainConfig`. Values are read as JSON where they parse (``8``, ``true``, ``[1,2]``),
    else as strings.
    """
    axes = []
    for item in sets or []:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"compare: --set takes KEY=V1,V2,..., got {item!r}")
        if key.startswith("train.") and key[6:] not in TrainConfig.__dataclass_fields__:
            raise ValueError(f"compare: {key!r} is not a training setting (fields: "
                             f"{', '.join(TrainConfig.__dataclass_fields__)})")
        axes.append([(key, _value(v)) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)]


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def settings_label(setting: dict) -> str:
    return ";".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in setting.items()) or "-"


def run_config(model: str, setting: dict, seed: int, base: TrainConfig) -> TrainConfig:
    cfg = dataclasses.replace(base, model=model, seed=seed, model_kwargs=json.loads(json.dumps(base.model_kwargs)))
    for key, value in setting.items():
        if key.startswith("train."):
            setattr(cfg, key[6:], value)
            continue
        *path, last = key.split(".")
        target = cfg.model_kwargs
        for part in path:
            target = target.setdefault(part, {})
        target[last] = value
    return cfg


def _dirname(model: str, setting: dict) -> str:
    label = settings_label(setting)
    safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in label.replace(";", "__"))
    return model if label == "-" else f"{model}__{safe}"


def _summary_path(run_dir: str) -> str:
    return os.path.join(run_dir, "summary.json")


def _finished(run_dir: str) -> dict | None:
    path = _summary_path(run_dir)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _train_one(cfg: TrainConfig) -> dict:
    from .trainer import train
    return train(cfg)


def _add_run_metrics(cfg: TrainConfig, summary: dict, run_dir: str) -> dict:
    missing = [name for name in RUN_METRICS if name not in summary.get("run_metrics", {})]
    if not missing:
        return summary
    from ..checkpoint import load_checkpoint
    from .checkpoints import LAST_WEIGHTS
    from .trainer import build_datasets, build_model, model_pretrained_cfg

    _, val_set = build_datasets(cfg, model_pretrained_cfg(cfg))
    model = build_model(cfg, val_set.num_classes, val_set.in_chans)
    load_checkpoint(model, os.path.join(run_dir, LAST_WEIGHTS), source="attnvision")
    model.eval()
    ctx = RunContext(model=model, val_set=val_set, summary=summary, run_dir=run_dir)
    summary.setdefault("run_metrics", {})
    for name in missing:
        value = RUN_METRICS[name](ctx)
        summary["run_metrics"][name] = None if value is None else float(value)
    atomic_write_text(_summary_path(run_dir), json.dumps(summary, indent=1) + "\n")
    return summary


def compare(models: list[str] | None = None, settings: list[dict] | None = None, *, data: str | None = None,
            epochs: int | None = None, seeds: int | None = None, out: str = "runs/compare",
            recipe: dict | None = None, jobs: int = 1, progress: bool = True) -> list[dict]:
    """Train the grid (skipping finished runs), write the results files and return the rows.

    ``None`` arguments take the value of :data:`DEFAULT`. ``recipe`` holds :class:`TrainConfig`
    fields shared by every run (defaults to ``DEFAULT["recipe"]`` when ``models`` is also left out).
    ``jobs`` runs that many trainings at once in separate processes (one thread each).
    """
    use_default = models is None
    models = list(models or DEFAULT["models"])
    settings = settings or [{}]
    data = data or DEFAULT["data"]
    epochs = epochs or DEFAULT["epochs"]
    seeds = seeds or DEFAULT["seeds"]
    recipe = dict(DEFAULT["recipe"] if use_default and recipe is None else recipe or {})
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"compare: seeds must be a positive integer, got {seeds!r}")
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"compare: jobs must be a positive integer, got {jobs!r}")
    from .._suggest import unknown_name_error
    from ..registry import is_model, list_models
    for m in models:
        if not (is_model(m) or m.startswith(("torchvision:", "timm:"))):
            raise unknown_name_error("compare", m, list_models())
    threads = recipe.pop("threads", None)
    base = TrainConfig(data=data, epochs=epochs, out=None, progress=progress and jobs == 1,
                       threads=1 if jobs > 1 else threads, **recipe)

    grid = [(m, s, k) for m in models for s in settings for k in range(seeds)]
    todo, summaries = [], {}
    for m, s, k in grid:
        run_dir = os.path.join(out, "runs", _dirname(m, s), f"seed{k}")
        cfg = run_config(m, s, k, base)
        cfg.out = run_dir
        done = _finished(run_dir)
        if done is not None:
            summaries[(m, settings_label(s), k)] = (cfg, done)
        else:
            cfg.resume = os.path.isfile(os.path.join(run_dir, "last.state.pt"))
            todo.append((m, s, k, cfg))
    if progress:
        print(f"compare: {len(grid)} runs ({len(grid) - len(todo)} already done) of {len(models)} models × "
              f"{len(settings)} settings × {seeds} seeds on {data}, {epochs} epochs; writing {out}/", flush=True)
    started = time.perf_counter()

    def finished(m, s, k, cfg, summary):
        if summary["interrupted"]:
            raise KeyboardInterrupt(f"compare: interrupted during {m} {settings_label(s)} seed {k}; "
                                    f"run the same command again to continue")
        summaries[(m, settings_label(s), k)] = (cfg, summary)
        if progress:
            print(f"  {m} {settings_label(s)} seed {k}: val acc1 {summary['val_acc1']:.2f} "
                  f"({summary['seconds']:.0f} s)", flush=True)

    if jobs > 1 and len(todo) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_train_one, cfg): (m, s, k, cfg) for m, s, k, cfg in todo}
            for fut in as_completed(futures):
                m, s, k, cfg = futures[fut]
                finished(m, s, k, cfg, fut.result())
    else:
        for m, s, k, cfg in todo:
            finished(m, s, k, cfg, _train_one(cfg))

    rows, outer_threads = [], torch.get_num_threads()
    for m, s, k in grid:
        cfg, summary = summaries[(m, settings_label(s), k)]
        torch.set_num_threads(base.threads or outer_threads)
        try:
            summary = _add_run_metrics(cfg, summary, cfg.out)
        finally:
            torch.set_num_threads(outer_threads)
        row = dict(model=m, settings=settings_label(s), seed=k)
        row.update({c: summary[c] for c in BASE_COLUMNS[3:]})
        row.update({name: summary["run_metrics"][name] for name in RUN_METRICS})
        rows.append(row)
    write_results(rows, out, dict(data=data, epochs=epochs, seeds=seeds, recipe=recipe,
                                  wall_seconds=time.perf_counter() - started, jobs=jobs))
    return rows


# -- results files -----------------------------------------------------------------------------

def _columns(rows: list[dict]) -> list[str]:
    extra = [c for c in rows[0] if c not in BASE_COLUMNS and any(r[c] is not None for r in rows)] if rows else []
    return [*BASE_COLUMNS, *extra]


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def group(rows: list[dict]) -> list[dict]:
    """Rows of the same model and settings merged: ``{col: (mean, std)}`` for every numeric column."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["settings"]), []).append(r)
    out = []
    for (model, setting), rs in groups.items():
        g = dict(model=model, settings=setting, n=len(rs))
        for c in _columns(rows)[3:]:
            g[c] = _mean_std([float(r[c]) for r in rs if r[c] is not None])
        out.append(g)
    return out


def _csv(rows: list[dict]) -> str:
    cols = _columns(rows)

    def cell(v):
        s = f"{v:.6g}" if isinstance(v, float) else "" if v is None else str(v)
        return f'"{s}"' if ("," in s or '"' in s) else s

    return "\n".join([",".join(cols)] + [",".join(cell(r[c]) for c in cols) for r in rows]) + "\n"


def _markdown(rows: list[dict], info: dict) -> str:
    from ..cli._table import format_table

    groups = group(rows)
    extra = _columns(rows)[len(BASE_COLUMNS):]
    base_acc = groups[0]["val_acc1"][0] if groups else 0.0
    headers = ["model", "settings", "val acc1 %", "Δ acc1", "best acc1 %", "params", "MACs", "train img/s",
               "infer img/s", *extra]
    table = []
    for g in groups:
        acc, std = g["val_acc1"]
        table.append([f"`{g['model']}`", g["settings"], f"{acc:.2f} ± {std:.2f}", f"{acc - base_acc:+.2f}",
                      f"{g['best_val_acc1'][0]:.2f} ± {g['best_val_acc1'][1]:.2f}", f"{int(g['params'][0]):,}",
                      f"{g['macs'][0] / 1e6:.2f} M", f"{g['train_images_per_s'][0]:.0f}",
                      f"{g['infer_images_per_s'][0]:.0f}",
                      *(f"{g[c][0]:.4g} ± {g[c][1]:.2g}" for c in extra)])
    recipe = ", ".join(f"{k}={v}" for k, v in info["recipe"].items()) or "defaults"
    n = groups[0]["n"] if groups else 0
    return (f"Data `{info['data']}`, {info['epochs']} epochs, {n} seed(s) (mean ± std over seeds; "
            f"Δ against `{groups[0]['model'] if groups else ''}`); recipe: {recipe}. Accuracy is the final epoch's "
            f"on the validation split; MACs for one image. Machine: {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"{platform.machine()}; {info['jobs']} run(s) at a time.\n\n" + format_table(headers, table, markdown=True)
            + "\n")


def _plot(rows: list[dict], path: str) -> bool:
    try:
        import matplotlib
    except ImportError:
        print("compare: matplotlib is not installed (pip install 'attnvision[plot]'); results.png skipped",
              file=sys.stderr)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, key, label in ((axes[0], "macs", "MACs (M)"), (axes[1], "params", "parameters (M)")):
        for g in groups:
            x = g[key][0] / 1e6
            ax.errorbar(x, g["val_acc1"][0], yerr=g["val_acc1"][1], fmt="o", capsize=4,
                        label=g["model"] + ("" if g["settings"] == "-" else f" {g['settings']}"))
        ax.set_xlabel(label)
        ax.set_ylabel("val top-1 accuracy (%)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle("accuracy (mean ± std over seeds) against cost")

    def write(tmp):
        fig.savefig(tmp, format="png", dpi=110)

    atomic_write(path, write)
    plt.close(fig)
    return True


def write_results(rows: list[dict], out: str, info: dict) -> None:
    atomic_write_text(os.path.join(out, "results.csv"), _csv(rows))
    atomic_write_text(os.path.join(out, "results.md"), _markdown(rows, info))
    _plot(rows, os.path.join(out, "results.png"))
