"""Running a comparison: every run of the plan trained (skipping finished runs, resuming cut ones),
the run metrics added, throughput measured one model at a time, and the results written.

More columns: ``register_run_metric(name, fn)`` adds a column computed after each run by
``fn(RunContext) -> float`` from the trained model (final weights, eval mode) and the validation set;
values are stored in the run's ``summary.json`` so reruns reuse them.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .._suggest import unknown_name_error
from ..explain import explanation_scores
from ..factory import is_model, list_models
from ..io import atomic_write_text
from ..registry import Registry
from ..tasks import ClassificationTask
from ..train.checkpoints import LAST_STATE, LAST_WEIGHTS
from ..train.config import TrainConfig
from ..train.process import scoped_process_state
from ..train.tasks import get_task
from ..train.trainer import build_datasets, build_model, model_pretrained_cfg, train
from ..weights import load_checkpoint
from .launchers import Launcher, Run, RunFailedError, create_launcher
from .plan import _Plan, _preset, plan, run_config, run_dirname, settings_label
from .progress import GridProgress
from .report import BASE_COLUMNS, SPEED_COLUMNS, Results, TaskColumns, write_results


@dataclass
class RunContext:
    """What a run metric sees: the trained model (final weights, eval mode), the validation set,
    the run's summary and directory."""

    model: nn.Module
    val_set: object
    summary: dict
    run_dir: str
    cache: dict = field(default_factory=dict)  # work shared by several metrics of one run


RUN_METRICS: Registry[Callable[["RunContext"], float | None]] = Registry("run metric")
# the column names of the tasks' metrics: a run metric cannot take one
_TASK_PREFIXES = ("train_", "val_", "best_")


def register_run_metric(name: str, fn: Callable[[RunContext], float | None]) -> None:
    """Add a ``name`` column to every comparison: ``fn(RunContext) -> float``, averaged over seeds.

    ``fn`` returns None where the metric does not apply (the column is then left out)."""
    if name in BASE_COLUMNS or name.startswith(_TASK_PREFIXES):
        raise ValueError(f"register_run_metric: {name!r} is a built-in column (or a task metric's name: "
                         f"{', '.join(p + '*' for p in _TASK_PREFIXES)})")
    RUN_METRICS.register(name, fn, who="register_run_metric")


def _box_scores(ctx: RunContext) -> dict | None:
    """Grad-CAM energy in the object's box and pointing-game hits over the validation set, for data
    with boxes (``cluttered-digits``): where each model looks, as the CBAM paper compares in pictures."""
    if getattr(ctx.val_set, "boxes", None) is None:
        return None
    if "box_scores" not in ctx.cache:
        ctx.cache["box_scores"] = explanation_scores(ctx.model, ctx.val_set)
    return ctx.cache["box_scores"]


register_run_metric("cam_energy", lambda ctx: (_box_scores(ctx) or {}).get("energy_in_box"))
register_run_metric("pointing_game", lambda ctx: (_box_scores(ctx) or {}).get("pointing_game"))



def _summary_path(run_dir: str) -> str:
    return os.path.join(run_dir, "summary.json")


def _finished(run_dir: str) -> dict | None:
    path = _summary_path(run_dir)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _train_one(cfg: TrainConfig) -> dict:
    """Train one run, resuming from its ``last.state.pt`` when it has one (a run cut short, or a cluster job
    requeued), and add the run metrics this process knows (the built-in ones), on its threads; in a
    distributed run, rank 0 adds them."""
    out = cfg.out
    assert out is not None  # compare gives every run its folder
    cfg = dataclasses.replace(cfg, resume=os.path.isfile(os.path.join(out, LAST_STATE)))
    summary = train(cfg)
    if summary["interrupted"] or int(os.environ.get("RANK", "0")) != 0:
        return summary
    with scoped_process_state(threads=cfg.threads):
        return _add_run_metrics(cfg, summary, out)


def _add_run_metrics(cfg: TrainConfig, summary: dict, run_dir: str) -> dict:
    missing = [name for name in RUN_METRICS if name not in summary.get("run_metrics", {})]
    if not missing:
        return summary
    _, val_set = build_datasets(cfg, model_pretrained_cfg(cfg))
    model = build_model(cfg, val_set)
    load_checkpoint(model, os.path.join(run_dir, LAST_WEIGHTS), source="attnvision")
    model.eval()
    ctx = RunContext(model=model, val_set=val_set, summary=summary, run_dir=run_dir)
    summary.setdefault("run_metrics", {})
    for name in missing:
        value = RUN_METRICS.get(name)(ctx)
        summary["run_metrics"][name] = None if value is None else float(value)
    atomic_write_text(_summary_path(run_dir), json.dumps(summary, indent=1) + "\n")
    return summary


def compare(models: list[str] | None = None, settings: list[dict] | None = None, *, preset: str | None = None,
            data: str | None = None, epochs: int | None = None, seeds: int | None = None,
            out: str = "runs/compare", recipe: dict | None = None, jobs: int = 1, progress: bool = True,
            task: str = "classification", head: str | None = None, launcher: str | Launcher = "local",
            launcher_options: dict | None = None) -> Results:
    """Train the grid (skipping finished runs), write the results files and return the rows.

    ``task="detection"`` or ``"segmentation"``: ``models`` are backbones under one ``head`` (default
    the task's ``compare_defaults``: Faster R-CNN on ``cluttered-digits-det``, Semantic FPN on
    ``cluttered-digits-seg``),
    ranked and paired by mAP or mIoU; throughput is then each run's own (training and validation).

    ``None`` arguments take the value of :data:`DEFAULT` (``settings`` and ``recipe`` only when
    ``models`` is also left out), or of ``PRESETS[preset]`` (whose recipe applies to any models).
    ``recipe`` holds :class:`TrainConfig` fields shared by every run.
    Each setting applies only to the models it changes (:func:`applicable`); the first model is
    the baseline every other is paired with, seed by seed. ``jobs`` runs that many trainings at
    once in separate processes, each on ``recipe["threads"]`` threads (default 1; the command line
    divides the available cores among the jobs); throughput is then measured afterwards, one model at
    a time, on as many threads.

    ``launcher`` says where the runs train (:mod:`attnvision.compare.launchers`): ``"local"`` (this
    machine) or ``"submitit"`` (SLURM jobs, with ``launcher_options`` such as ``partition``,
    ``gpus_per_run``, ``time_limit``), or a launcher object. Either way the results are read from each
    run's ``summary.json``. ``progress`` draws progress bars: each epoch's in a run trained in this process,
    else one over the runs with the time left; the lines (each epoch's, each finished run's) are said
    either way.
    """
    if isinstance(launcher, str):
        launcher = create_launcher(launcher, **(launcher_options or {}))
    elif launcher_options:
        raise ValueError("compare: launcher_options go with a launcher's name; a launcher object has its options")
    task_spec = get_task(task)
    if task_spec.uses_backbone:
        if preset or not models:
            raise ValueError(f"compare: --task {task} compares the backbones given (--backbones A,B,...); "
                             f"presets are classification protocols")
        assert task_spec.compare_defaults is not None  # a task with a backbone gives its head, data and schedule
        source = dict(task_spec.compare_defaults, models=models, settings=[{}])
        recipe = dict(source["recipe"], **(recipe or {}))
        recipe.update(task=task, model=head or source["model"])
    elif head is not None:
        raise ValueError("compare: a head (--model) goes with --task detection|segmentation")
    else:
        source = _preset(preset)
    use_default = models is None
    models = list(models or source["models"])
    settings = settings if settings is not None else (source["settings"] if use_default else [{}])
    data = data or source["data"]
    if data is None:
        raise ValueError(f"compare: the {preset!r} preset needs data, e.g. cifar10:PATH or cifar100:PATH")
    epochs = epochs or source["epochs"]
    seeds = seeds or source["seeds"]
    recipe = dict(source["recipe"] if (use_default or preset) and recipe is None else recipe or {})
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"compare: seeds must be a positive integer, got {seeds!r}")
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"compare: jobs must be a positive integer, got {jobs!r}")
    for m in models:
        if not (is_model(m) or m.startswith(("torchvision:", "timm:"))):
            raise unknown_name_error("compare", m, list_models())
    threads = recipe.pop("threads", None)
    base = TrainConfig(data=data, epochs=epochs, out=None, progress=progress, threads=threads or launcher.threads(jobs),
                       **recipe)

    columns = TaskColumns.of(task_spec)
    grid = plan(models, settings, seeds, base)
    configs, todo = {}, []
    for m, s, k in grid.runs:
        cfg = run_config(m, s, k, base)
        cfg.out = os.path.join(out, "runs", run_dirname(m, s), f"seed{k}")
        configs[(m, settings_label(s), k)] = cfg
        if _finished(cfg.out) is None:
            todo.append(Run(f"{m} {settings_label(s)} seed {k}", cfg))
    in_process = launcher.in_process(jobs, len(todo))
    for run in todo:  # runs elsewhere draw no bars of their own: the grid's bar follows them
        run.cfg.progress = progress and in_process
    groups = len({(m, settings_label(s)) for m, s, _ in grid.runs})
    print(f"compare: {len(grid.runs)} runs ({len(grid.runs) - len(todo)} already done): {groups} models/settings "
          f"× {seeds} seed(s) on {data}, {epochs} epochs; writing {out}/", flush=True)
    for key, missed in grid.unaffected.items():
        print(f"compare: {key} does not change {', '.join(missed)}: trained once per seed without it", flush=True)
    started = time.perf_counter()

    def finished(run: Run, summary: dict) -> str:
        if summary["interrupted"]:
            raise KeyboardInterrupt(f"compare: interrupted during {run.label}; run the same command again to continue")
        return (f"  {run.label}: {columns.label.removesuffix(' %')} {summary[columns.primary]:.{columns.digits}f} "
                f"({summary['seconds']:.0f} s)")

    with GridProgress(len(grid.runs), len(grid.runs) - len(todo), launcher.parallel(jobs, len(todo)),
                      bar=progress and bool(todo) and not in_process, on_finished=finished) as watch:
        launcher.launch(todo, _train_one, jobs=jobs, out=out, watch=watch)

    rows = []  # gathered alike from every launcher: each run's summary.json
    here = launcher.on_this_machine()
    with scoped_process_state(threads=base.threads):
        speed = _throughputs(grid, base, out) if not task_spec.uses_backbone and here else {}
        for m, s, k in grid.runs:
            cfg = configs[(m, settings_label(s), k)]
            run_dir = cfg.out
            assert run_dir is not None  # set above
            summary = _finished(run_dir)
            if summary is None:
                raise RunFailedError(f"compare: {m} {settings_label(s)} seed {k} ended without writing "
                                     f"{_summary_path(run_dir)}")
            summary = _add_run_metrics(cfg, summary, run_dir)  # metrics registered in this process only
            row = dict(model=m, settings=settings_label(s), seed=k)
            row.update({c: summary[c] for c in columns.base[3:] if c not in SPEED_COLUMNS})
            row.update(speed.get(run_dirname(m, s)) or {c: summary[c] for c in SPEED_COLUMNS})
            row.update({name: summary["run_metrics"][name] for name in RUN_METRICS})
            rows.append(row)
    rows = Results(rows, grid.partner)
    write_results(rows, out, dict(data=data, epochs=epochs, seeds=seeds, recipe=recipe, task=task,
                                  jobs=launcher.parallel(jobs, len(grid.runs)), launcher=launcher.name,
                                  speed="alone" if speed else "runs",
                                  threads=torch.get_num_threads() if base.threads is None else base.threads,
                                  partner=grid.partner,
                                  wall_seconds=time.perf_counter() - started))
    return rows


def _time_steps(step: Callable[[], None], min_seconds: float = 1.0, min_steps: int = 3) -> float:
    """Seconds per call of ``step`` after two warm-up calls, over at least ``min_steps`` calls and ``min_seconds``."""
    for _ in range(2):
        step()
    n, start = 0, time.perf_counter()
    while n < min_steps or time.perf_counter() - start < min_seconds:
        step()
        n += 1
    return (time.perf_counter() - start) / n


def measure_throughput(cfg: TrainConfig, sample_shape: tuple[int, ...], num_classes: int) -> dict:
    """Training (forward, backward, SGD step at ``cfg.batch_size``) and inference (no-grad forward at
    ``cfg.eval_batch_size``) images per second of ``cfg``'s model on random inputs, on the CPU threads
    this process has; run alone, so that parallel runs do not share the cores being measured."""
    model = ClassificationTask().model(cfg, num_classes, sample_shape[0])
    x = torch.randn(cfg.batch_size, *sample_shape)
    y = torch.randint(num_classes, (cfg.batch_size,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train_step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    model.train()
    train_s = _time_steps(train_step)
    model.eval()
    xe = torch.randn(cfg.eval_batch_size, *sample_shape)
    with torch.no_grad():
        infer_s = _time_steps(lambda: model(xe))
    return dict(train_images_per_s=cfg.batch_size / train_s, infer_images_per_s=cfg.eval_batch_size / infer_s)


def _throughputs(grid: _Plan, base: TrainConfig, out: str) -> dict[str, dict]:
    """Throughput of every (model, settings) group, measured one at a time after the training runs and
    kept in ``out/throughput.json`` (measured again when the thread count or batch sizes change)."""
    path = os.path.join(out, "throughput.json")
    stored = json.load(open(path, encoding="utf-8")) if os.path.isfile(path) else {}
    when = dict(threads=torch.get_num_threads(), batch_size=base.batch_size, eval_batch_size=base.eval_batch_size)
    speed, sample = {}, None
    for m, s, k in grid.runs:
        name = run_dirname(m, s)
        if name in speed:
            continue
        if stored.get(name, {}).get("when") == when:
            speed[name] = {c: stored[name][c] for c in SPEED_COLUMNS}
            continue
        cfg = run_config(m, s, k, base)
        if sample is None:
            val_set = build_datasets(cfg, model_pretrained_cfg(cfg))[1]
            sample = (tuple(val_set[0][0].shape), val_set.num_classes)
        speed[name] = measure_throughput(cfg, *sample)
        stored[name] = dict(speed[name], when=when)
        print(f"  {m} {settings_label(s)}: {speed[name]['train_images_per_s']:.0f} train, "
              f"{speed[name]['infer_images_per_s']:.0f} inference img/s (alone, {when['threads']} thread(s))",
              flush=True)
    atomic_write_text(path, json.dumps(stored, indent=1) + "\n")
    return speed
