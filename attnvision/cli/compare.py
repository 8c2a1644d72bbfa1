"""``attnvision compare [--models A,B] [--set KEY=V1,V2] ...``: a fair grid of models × settings × seeds.

With no arguments it runs the default comparison (:data:`attnvision.compare.DEFAULT`); it
ends with a table of each model's accuracy and Grad-CAM energy in the digit's box, their paired
differences to the baseline and, in words, whether each is larger than the seed spread.
"""
from __future__ import annotations

import os
import sys

from .._table import format_table
from ..compare import (
    DEFAULT,
    LAUNCHERS,
    PRESETS,
    RunFailedError,
    compare,
    create_launcher,
    delta_cell,
    group,
    mean_cell,
    parse_sets,
    task_columns,
    verdict,
)
from ..train.config import TrainConfig, config_from_dict
from ..train.tasks import TASKS, get_task
from ._config import add_config_options
from ._threads import add_threads_option, available_cpus, resolve_threads

# TrainConfig fields that the grid sets itself (or that name where and how each run goes)
_OWN_FIELDS = ("model", "data", "task", "backbone", "epochs", "seed", "out", "resume", "overwrite", "progress",
               "threads")
RECIPE_FIELDS = [f for f in TrainConfig.__dataclass_fields__ if f not in _OWN_FIELDS]
# the submitit launcher's options: flag -> its keyword (attnvision.compare.SubmititLauncher)
SUBMITIT_FLAGS = {"--partition": "partition", "--gpus-per-run": "gpus_per_run", "--cpus-per-run": "cpus_per_run",
                  "--time-limit": "time_limit", "--nodes-per-run": "nodes_per_run",
                  "--slurm-array-parallelism": "array_parallelism"}


def add_parser(sub):
    p = sub.add_parser("compare", help="train a grid of models and settings over seeds; write results.csv/.md/.png")
    p.add_argument("--models", help=f"comma-separated model names (default: {','.join(DEFAULT['models'])})")
    p.add_argument("--task", choices=TASKS.names(), default="classification",
                   help="detection|segmentation: compare --backbones under one head (--model), by mAP or mIoU")
    p.add_argument("--backbones", help="with --task detection|segmentation: comma-separated backbones, the first "
                   "the baseline")
    p.add_argument("--model", help="with --task: the head (default fasterrcnn for detection, semantic_fpn for "
                   "segmentation)")
    p.add_argument("--set", dest="sets", action="append", metavar="KEY=V1,V2",
                   help="a grid axis: a dotted model keyword (attn_kwargs.reduction=8,16) or train.FIELD=V1,V2; "
                   "repeatable")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="a paper's protocol instead of the default: cifar = ResNet-110 plain/SE/ECA/BAM/CBAM, "
                   "He et al.'s CIFAR schedule (SGD 0.1, momentum 0.9, wd 1e-4, batch 128, 164 epochs, ÷10 at "
                   "epochs 82 and 123); needs --data cifar10:PATH or cifar100:PATH")
    p.add_argument("--data", help=f"dataset spec (default: {DEFAULT['data']})")
    p.add_argument("--epochs", type=int, help=f"epochs per run (default: {DEFAULT['epochs']})")
    p.add_argument("--seeds", type=int, help=f"seeds per setting (default: {DEFAULT['seeds']})")
    # every other TrainConfig field, shared by all runs (the grid's own options above replace theirs)
    add_config_options(p, exclude=_OWN_FIELDS, show_defaults=False)
    add_threads_option(p, "torch threads of each run, divided among the --jobs")
    p.add_argument("--jobs", type=int, help="runs at once (default: the cores this process may use, at most 2)")
    p.add_argument("--out", default="runs/compare", help="output directory (default runs/compare)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars (the lines of each epoch and each finished run are printed either way)")
    g = p.add_argument_group("launcher", "where the runs train (docs/cluster.md)")
    g.add_argument("--launcher", choices=LAUNCHERS.names(), default="local",
                   help="local: this machine (--jobs at once); submitit: a SLURM job each (pip install "
                   "\"attnvision[slurm]\"), or submitit's local jobs where there is no SLURM; logs in OUT/submitit/")
    g.add_argument("--partition", help="submitit: the SLURM partition")
    g.add_argument("--gpus-per-run", type=int, metavar="N", help="submitit: GPUs of each run, one process each "
                   "(default 0: CPU)")
    g.add_argument("--cpus-per-run", type=int, metavar="N", help="submitit: CPU cores of each run (its threads)")
    g.add_argument("--time-limit", type=int, metavar="MINUTES", help="submitit: time limit of each job (default 120 "
                   "on SLURM); a run cut by it is requeued and resumes from its last.state.pt")
    g.add_argument("--nodes-per-run", type=int, metavar="N", help="submitit: nodes of each run (default 1)")
    g.add_argument("--slurm-array-parallelism", dest="array_parallelism", type=int, metavar="N",
                   help="submitit: jobs of the array running at once (default all)")
    p.set_defaults(func=run)


def run(args) -> int:
    dense = get_task(args.task).uses_backbone  # backbones under one head
    if dense and args.models:
        raise ValueError(f"compare: --task {args.task} compares --backbones under one head (--model); drop --models")
    if not dense and (args.backbones or args.model):
        raise ValueError("compare: --backbones and --model go with --task detection|segmentation; "
                         "compare classifiers with --models")
    names = args.backbones if dense else args.models
    models = [m.strip() for m in names.split(",") if m.strip()] if names else None
    # the default recipe; its model keywords (the small ResNet's stem) only go with the default models
    source = PRESETS[args.preset] if args.preset else DEFAULT
    recipe = {k: v for k, v in source["recipe"].items() if k != "model_kwargs" or models is None} if not dense else {}
    recipe.update(config_from_dict({k: v for k, v in vars(args).items() if k in RECIPE_FIELDS}, "compare"))
    options = {key: getattr(args, key) for key in SUBMITIT_FLAGS.values() if getattr(args, key) is not None}
    if args.launcher != "submitit" and options:
        flags = [flag for flag, key in SUBMITIT_FLAGS.items() if key in options]
        raise ValueError(f"compare: {', '.join(flags)} go{'es' if len(flags) == 1 else ''} with --launcher submitit")
    try:
        launcher = create_launcher(args.launcher, **options)  # before anything is written
    except ImportError as e:
        raise ValueError(str(e)) from e
    jobs = args.jobs if args.jobs is not None else min(2, available_cpus())
    if jobs >= 1 and launcher.on_this_machine() and not options.get("cpus_per_run"):  # else refused by compare,
        recipe["threads"] = resolve_threads(args.threads, "compare", launcher.parallel(jobs, jobs))  # or the job's
    elif args.threads is not None:
        recipe["threads"] = resolve_threads(args.threads, "compare", warn=False)
    try:
        rows = compare(models, parse_sets(args.sets) if args.sets else None, preset=args.preset, data=args.data,
                       epochs=args.epochs, seeds=args.seeds, out=args.out, recipe=recipe, jobs=jobs, task=args.task,
                       head=args.model, launcher=launcher, progress=args.progress)
    except RunFailedError as e:  # said where it failed, with its log: the job's traceback is in that log
        print(f"attnvision compare: error: {str(e).removeprefix('compare: ')}", file=sys.stderr)
        return 1
    if not rows:
        return 130
    print(summary_table(rows))
    print(f"wrote {os.path.join(args.out, 'results.csv')}, results.md, results.png", file=sys.stderr)
    return 0


def summary_table(rows) -> str:
    """The terminal table: accuracy and (on data with boxes) Grad-CAM energy in the box, each with its
    paired difference to the baseline and what that difference says, then how to read it."""

    groups = group(rows, getattr(rows, "partner", None))
    spec = task_columns(rows)
    boxes = all(g.get("cam_energy") is not None for g in groups)
    if spec.primary == "val_acc1":
        headers = ["model", "settings", "val acc1 %", "Δ acc1 [95% CI]", "accuracy"]
    else:
        headers = ["backbone", "settings", spec.label, f"Δ {spec.label} [95% CI]", spec.label]
    headers += ["cam energy", "Δ energy [95% CI]", "looks at the digit"] if boxes else []
    table = []
    for g in groups:
        paired = g["paired"]
        acc = paired[spec.primary] if paired else None
        line = [g["model"], g["settings"], mean_cell(g[spec.primary], g["n"], spec.digits),
                delta_cell(acc, spec.digits), verdict(acc)]
        if boxes:
            energy = paired["cam_energy"] if paired else None
            line += [mean_cell(g["cam_energy"], g["n"], 3), delta_cell(energy, 3),
                     verdict(energy, "more", "less")]
        table.append(line)
    seeds = sorted({g["n"] for g in groups})
    base = groups[0]["model"]
    if seeds == [1]:
        note = (f"1 seed: single values, no spread; Δ is the difference to {base} and cannot be told apart from "
                f"seed noise (use --seeds 3 or more)")
    else:
        note = (f"{'/'.join(map(str, seeds))} seeds per model (mean ± std); Δ is the mean difference to {base} "
                f"trained with the same seed, with its 95% Student-t interval; a difference is called higher/lower "
                f"(*) only when that interval excludes 0, i.e. it is larger than the seed-to-seed spread")
    return format_table(headers, table) + "\n" + note
