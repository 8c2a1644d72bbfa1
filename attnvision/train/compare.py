"""Fair comparisons: a grid of models × settings × seeds, trained with one recipe on one dataset.

``compare(models=["resnet20", "resnet20_cbam"], settings=parse_sets(["attn_kwargs.reduction=8,16"]))``
trains every combination (each in ``out/runs/<model>[__<settings>]/seed<k>``), skipping runs
that already finished and resuming those that were cut short, then writes:

- ``results.csv``: one row per run (``model, settings, seed, val_acc1, val_acc5, best_val_acc1,
  params, macs, train_images_per_s, infer_images_per_s, seconds`` and one column per
  registered run metric);
- ``results.md``: mean ± standard deviation over seeds of every metric, per model and setting, and
  for accuracy and ``cam_energy`` the paired difference to the baseline (:func:`group`);
- ``results.png``: accuracy against MACs and against parameters, with error bars;
- ``throughput.json``: training and inference images per second of each model, measured after
  all training, one model at a time (:func:`measure_throughput`).

The first model is the baseline. A setting applies only to the models it changes
(:func:`applicable`), so the baseline is not trained again under, say, every reduction ratio;
every other (model, settings) group is paired, seed by seed, with the baseline trained under the
same grid point, and its mean difference gets a 95% Student-t interval (:mod:`.stats`).

On data with object boxes (``cluttered-digits``) two more columns say where each model looks:
``cam_energy`` (the fraction of Grad-CAM mass inside the digit's box) and ``pointing_game`` (the
share of images whose CAM peak falls in the box), from :func:`attnvision.explain.explanation_scores`.

More columns: ``register_run_metric(name, fn)`` adds a column computed after each run by
``fn(RunContext) -> float`` from the trained model (final weights, eval mode) and the
validation set; values are stored in the run's ``summary.json`` so reruns reuse them.

The default grid (``DEFAULT``) is the README's first command: ResNet-20 plain and with SE, ECA,
BAM and CBAM on ``cluttered-digits``, 3 seeds, ``attn_kwargs.reduction=4`` (at 16, the 16-channel
stage would leave one hidden unit in each attention MLP), AdamW (4e-3, half an epoch of warm-up,
label smoothing 0.1, batch 64) for 11 epochs of fresh canvases.
``PRESETS["cifar"]`` is He et al.'s CIFAR protocol for ResNet-110 and its attention variants.
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
from .stats import Paired, paired_difference
from .trainer import TrainConfig

DEFAULT = dict(
    models=["resnet20", "resnet20_se", "resnet20_eca", "resnet20_bam", "resnet20_cbam"],
    settings=[{"attn_kwargs.reduction": 4}],
    data="cluttered-digits", epochs=11, seeds=3,
    recipe=dict(batch_size=64, lr=4e-3, opt="adamw", sched="cosine", warmup_epochs=0.5, label_smoothing=0.1,
                model_kwargs=dict(stem="imagenet")),
)
# He et al., Deep Residual Learning for Image Recognition (CVPR 2016), §4.2, CIFAR-10: SGD with momentum 0.9,
# weight decay 1e-4, batch 128, learning rate 0.1 divided by 10 at 32k and 48k of 64k iterations (50% and 75%),
# i.e. epochs 82 and 123 of 164 on the 50k training images, with 4-pixel pad, 32×32 crop and flip. ResNet-110 is
# the deepest network of that table and one the SE paper reports on CIFAR; attention keeps the papers' reduction 16.
PRESETS = dict(
    cifar=dict(
        models=["resnet110", "resnet110_se", "resnet110_eca", "resnet110_bam", "resnet110_cbam"],
        settings=[{}], data=None, epochs=164, seeds=3,
        recipe=dict(batch_size=128, lr=0.1, opt="sgd", momentum=0.9, weight_decay=1e-4, sched="step",
                    step_milestones=(82, 123)),
    ),
)
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


# ``compare --task detection|segmentation --backbones A,B``: the groups are backbones under one head.
TASK_COLUMNS = {
    "classification": TaskColumns(BASE_COLUMNS[3:6], "val_acc1", "val acc1 %", 2),
    "detection": TaskColumns(("val_map", "val_map_50", "val_map_75", "best_val_map"), "val_map", "mAP", 4),
    "segmentation": TaskColumns(("val_miou", "val_pixel_acc", "best_val_miou"), "val_miou", "mIoU", 4),
}
# Dense comparisons without other arguments: the head, data and schedule of the README's examples.
DENSE_DEFAULTS = dict(
    detection=dict(model="fasterrcnn", data="cluttered-digits-det", epochs=4, seeds=3,
                   recipe=dict(batch_size=8, lr=3e-3, opt="adamw", model_kwargs=dict(fpn_channels=64))),
    segmentation=dict(model="semantic_fpn", data="cluttered-digits-seg", epochs=4, seeds=3,
                      recipe=dict(batch_size=8, lr=3e-3, opt="adamw", model_kwargs=dict(fpn_channels=64, channels=64))),
)


def task_columns(rows: list[dict]) -> TaskColumns:
    """The :class:`TaskColumns` of a comparison's rows (told apart by their primary metric)."""
    for spec in TASK_COLUMNS.values():
        if rows and spec.primary in rows[0]:
            return spec
    return TASK_COLUMNS["classification"]


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
    if any(name in spec.base for spec in TASK_COLUMNS.values()):
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
    """The run of ``model`` (the backbone, for detection and segmentation) under ``setting`` and ``seed``."""
    named = dict(model=model) if base.task == "classification" else dict(backbone=model)
    cfg = dataclasses.replace(base, **named, seed=seed, model_kwargs=json.loads(json.dumps(base.model_kwargs)))
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
    """Train one run and add the run metrics this process knows (the built-in ones), on its threads."""
    from .trainer import train
    summary = train(cfg)
    if summary["interrupted"]:
        return summary
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or threads)
    try:
        return _add_run_metrics(cfg, summary, cfg.out)
    finally:
        torch.set_num_threads(threads)


def _add_run_metrics(cfg: TrainConfig, summary: dict, run_dir: str) -> dict:
    missing = [name for name in RUN_METRICS if name not in summary.get("run_metrics", {})]
    if not missing:
        return summary
    from ..checkpoint import load_checkpoint
    from .checkpoints import LAST_WEIGHTS
    from .trainer import build_datasets, build_model, model_pretrained_cfg

    _, val_set = build_datasets(cfg, model_pretrained_cfg(cfg))
    model = build_model(cfg, val_set)
    load_checkpoint(model, os.path.join(run_dir, LAST_WEIGHTS), source="attnvision")
    model.eval()
    ctx = RunContext(model=model, val_set=val_set, summary=summary, run_dir=run_dir)
    summary.setdefault("run_metrics", {})
    for name in missing:
        value = RUN_METRICS[name](ctx)
        summary["run_metrics"][name] = None if value is None else float(value)
    atomic_write_text(_summary_path(run_dir), json.dumps(summary, indent=1) + "\n")
    return summary


def _signature(model: str, model_kwargs: dict):
    """What a model built with ``model_kwargs`` is: its modules, tensor shapes and plain attributes
    (built on the meta device, so nothing is allocated)."""
    from ..registry import create_model

    with torch.device("meta"):
        net = create_model(model, **model_kwargs)
    plain = (bool, int, float, str, tuple, type(None))
    attrs = [(name, sorted((k, repr(v)) for k, v in vars(m).items() if not k.startswith("_") and isinstance(v, plain)))
             for name, m in net.named_modules()]
    return repr(net), [(k, tuple(v.shape)) for k, v in net.state_dict().items()], attrs


def applicable(model: str, setting: dict, base: TrainConfig) -> dict:
    """The part of ``setting`` that changes ``model``: ``train.*`` keys always do; a model keyword does
    when the model built with it differs from the one built without it (a model that does not take
    the keyword, like ECA for ``attn_kwargs.reduction``, or that ignores it, like a network without
    attention for any ``attn_kwargs``, is not affected)."""
    kept, plain = {}, None
    for key, value in setting.items():
        if key.startswith("train.") or base.task != "classification":  # a head's keywords change every run
            kept[key] = value
            continue
        if plain is None:  # the model without any setting: built once, compared with each
            plain = _signature(model, run_config(model, {}, 0, base).model_kwargs)
        try:
            changed = _signature(model, run_config(model, {key: value}, 0, base).model_kwargs) != plain
        except TypeError:  # an unexpected keyword: this model has no such setting
            changed = False
        if changed:
            kept[key] = value
    return kept


class Results(list):
    """The rows :func:`compare` returns (one dict per run); ``partner`` maps each (model, settings)
    group to the baseline group it is paired with."""

    def __init__(self, rows: list[dict], partner: dict[tuple[str, str], tuple[str, str]]):
        super().__init__(rows)
        self.partner = partner


@dataclass
class _Plan:
    """The runs of a grid: every model with each setting restricted to what affects it, and for every
    (model, settings) group the baseline group it is paired with."""

    runs: list[tuple[str, dict, int]]                   # (model, applicable settings, seed), unique
    partner: dict[tuple[str, str], tuple[str, str]]     # group -> the baseline group of the same grid point
    unaffected: dict[str, list[str]]                    # setting key -> models it does not change


def plan(models: list[str], settings: list[dict], seeds: int, base: TrainConfig) -> _Plan:
    """Restrict each setting to the models it affects (:func:`applicable`), so that e.g. the baseline
    runs once per seed under ``--set attn_kwargs.reduction=4,16``; pair every group with the
    baseline (``models[0]``) trained under the same grid point's settings."""
    runs, partner, unaffected, seen = [], {}, {}, set()
    for s in settings:
        own = {m: applicable(m, s, base) for m in models}
        for key in s:
            missed = [m for m in models if key not in own[m]]
            if len(missed) == len(models):
                raise ValueError(f"compare: --set {key} changes none of the models ({', '.join(models)}); "
                                 f"check the key's spelling against the models' keyword arguments")
            if missed:
                unaffected.setdefault(key, [])
                unaffected[key] += [m for m in missed if m not in unaffected[key]]
        baseline = (models[0], settings_label(own[models[0]]))
        for m in models:
            group_key = (m, settings_label(own[m]))
            partner.setdefault(group_key, baseline)
            for k in range(seeds):
                if (m, group_key[1], k) not in seen:
                    seen.add((m, group_key[1], k))
                    runs.append((m, own[m], k))
    return _Plan(runs, partner, unaffected)


def compare(models: list[str] | None = None, settings: list[dict] | None = None, *, preset: str | None = None,
            data: str | None = None, epochs: int | None = None, seeds: int | None = None,
            out: str = "runs/compare", recipe: dict | None = None, jobs: int = 1, progress: bool = True,
            task: str = "classification", head: str | None = None) -> Results:
    """Train the grid (skipping finished runs), write the results files and return the rows.

    ``task="detection"`` or ``"segmentation"``: ``models`` are backbones under one ``head`` (default
    :data:`DENSE_DEFAULTS`: Faster R-CNN on ``cluttered-digits-det``, Semantic FPN on ``cluttered-digits-seg``),
    ranked and paired by mAP or mIoU; throughput is then each run's own (training and validation).

    ``None`` arguments take the value of :data:`DEFAULT` (``settings`` and ``recipe`` only when
    ``models`` is also left out), or of ``PRESETS[preset]`` (whose recipe applies to any models).
    ``recipe`` holds :class:`TrainConfig` fields shared by every run.
    Each setting applies only to the models it changes (:func:`applicable`); the first model is
    the baseline every other is paired with, seed by seed. ``jobs`` runs that many trainings at
    once in separate processes, each on ``recipe["threads"]`` threads (default 1; the command line
    divides the available cores among the jobs); throughput is then measured afterwards, one model at
    a time, on as many threads.
    """
    if task != "classification":
        if task not in DENSE_DEFAULTS:
            raise ValueError(f"compare: task must be one of {sorted(TASK_COLUMNS)}, got {task!r}")
        if preset or not models:
            raise ValueError(f"compare: --task {task} compares the backbones given (--backbones A,B,...); "
                             f"presets are classification protocols")
        source = dict(DENSE_DEFAULTS[task], models=models, settings=[{}])
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
    from .._suggest import unknown_name_error
    from ..registry import is_model, list_models
    for m in models:
        if not (is_model(m) or m.startswith(("torchvision:", "timm:"))):
            raise unknown_name_error("compare", m, list_models())
    threads = recipe.pop("threads", None)
    base = TrainConfig(data=data, epochs=epochs, out=None, progress=progress and jobs == 1,
                       threads=threads or (1 if jobs > 1 else None), **recipe)

    columns = TASK_COLUMNS[task]
    grid = plan(models, settings, seeds, base)
    todo, summaries = [], {}
    for m, s, k in grid.runs:
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
        groups = len({(m, settings_label(s)) for m, s, _ in grid.runs})
        print(f"compare: {len(grid.runs)} runs ({len(grid.runs) - len(todo)} already done): {groups} models/settings "
              f"× {seeds} seed(s) on {data}, {epochs} epochs; writing {out}/", flush=True)
        for key, missed in grid.unaffected.items():
            print(f"compare: {key} does not change {', '.join(missed)}: trained once per seed without it",
                  flush=True)
    started = time.perf_counter()

    def finished(m, s, k, cfg, summary):
        if summary["interrupted"]:
            raise KeyboardInterrupt(f"compare: interrupted during {m} {settings_label(s)} seed {k}; "
                                    f"run the same command again to continue")
        summaries[(m, settings_label(s), k)] = (cfg, summary)
        if progress:
            print(f"  {m} {settings_label(s)} seed {k}: {columns.label.removesuffix(' %')} "
                  f"{summary[columns.primary]:.{columns.digits}f} ({summary['seconds']:.0f} s)", flush=True)

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
    torch.set_num_threads(base.threads or outer_threads)
    try:
        speed = _throughputs(grid, base, out, progress) if task == "classification" else {}
        for m, s, k in grid.runs:
            cfg, summary = summaries[(m, settings_label(s), k)]
            summary = _add_run_metrics(cfg, summary, cfg.out)  # metrics registered in this process only
            row = dict(model=m, settings=settings_label(s), seed=k)
            row.update({c: summary[c] for c in columns.base[3:] if c not in SPEED_COLUMNS})
            row.update(speed.get(_dirname(m, s)) or {c: summary[c] for c in SPEED_COLUMNS})
            row.update({name: summary["run_metrics"][name] for name in RUN_METRICS})
            rows.append(row)
    finally:
        torch.set_num_threads(outer_threads)
    rows = Results(rows, grid.partner)
    write_results(rows, out, dict(data=data, epochs=epochs, seeds=seeds, recipe=recipe, jobs=jobs, task=task,
                                  threads=torch.get_num_threads() if base.threads is None else base.threads,
                                  partner=grid.partner,
                                  wall_seconds=time.perf_counter() - started))
    return rows


def _preset(name: str | None) -> dict:
    if name is None:
        return DEFAULT
    if name not in PRESETS:
        raise ValueError(f"compare: preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]


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
    from .tasks import ClassificationTask

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


def _throughputs(grid: _Plan, base: TrainConfig, out: str, progress: bool) -> dict[str, dict]:
    """Throughput of every (model, settings) group, measured one at a time after the training runs and
    kept in ``out/throughput.json`` (measured again when the thread count or batch sizes change)."""
    path = os.path.join(out, "throughput.json")
    stored = json.load(open(path, encoding="utf-8")) if os.path.isfile(path) else {}
    when = dict(threads=torch.get_num_threads(), batch_size=base.batch_size, eval_batch_size=base.eval_batch_size)
    speed, sample = {}, None
    for m, s, k in grid.runs:
        name = _dirname(m, s)
        if name in speed:
            continue
        if stored.get(name, {}).get("when") == when:
            speed[name] = {c: stored[name][c] for c in SPEED_COLUMNS}
            continue
        cfg = run_config(m, s, k, base)
        if sample is None:
            from .trainer import build_datasets, model_pretrained_cfg
            val_set = build_datasets(cfg, model_pretrained_cfg(cfg))[1]
            sample = (tuple(val_set[0][0].shape), val_set.num_classes)
        speed[name] = measure_throughput(cfg, *sample)
        stored[name] = dict(speed[name], when=when)
        if progress:
            print(f"  {m} {settings_label(s)}: {speed[name]['train_images_per_s']:.0f} train, "
                  f"{speed[name]['infer_images_per_s']:.0f} inference img/s (alone, {when['threads']} thread(s))",
                  flush=True)
    atomic_write_text(path, json.dumps(stored, indent=1) + "\n")
    return speed


# -- results files -----------------------------------------------------------------------------

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
    from ..cli._table import format_table

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
    speed = (f"throughput measured after training, one model at a time, on {info.get('threads', '?')} thread(s)"
             if spec.primary == "val_acc1" else "throughput of each run's own training and validation, mean over seeds")
    measured = ("Accuracy is" if spec.primary == "val_acc1" else
                f"{spec.label} ({spec.primary}; {', '.join(spec.metrics[1:])} beside it) is")
    return (f"Data `{info['data']}`, {info['epochs']} epochs, {spread}; recipe: {recipe}. {measured} the final "
            f"epoch's on the validation split. Δ: the mean over seeds of the difference to the baseline trained "
            f"with the same seed (same data order and initialisation seed), with its 95% Student-t interval; `*` "
            f"marks an interval that excludes 0 (a difference larger than the seed spread explains). MACs for one "
            f"image; {speed}. Machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {platform.machine()}; "
            f"{info['jobs']} run(s) at a time.\n\n" + format_table(headers, table, markdown=True) + "\n")


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
