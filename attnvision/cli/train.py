"""``attnvision train --model NAME --data SPEC --epochs N ...``: train one model (torchrun for many processes)."""
from __future__ import annotations

import argparse
import os
import signal
import sys

from ..data import DATASETS, SMALL_DATA_RECIPE, parse_spec
from ..train import NonFiniteLossError, TrainConfig, train
from ..train.config import config_from_dict, dump_config, load_config
from ..train.distributed import shutdown
from ..train.rundir import resumed_config
from ..train.tasks import TASKS, get_task
from ._config import add_config_options
from ._threads import add_threads_option, resolve_threads

DEFAULT_OUT = "runs/train"


def add_parser(sub):
    # No defaults here: the options given are exactly the attributes set, so that `--resume DIR` and
    # `--config FILE` can tell them from the stored or file recipe; the defaults are TrainConfig's.
    recipe = ", ".join(f"{k}={v}" for k, v in SMALL_DATA_RECIPE.items())
    p = sub.add_parser("train", argument_default=argparse.SUPPRESS,
                       help="train a model on a dataset (torchrun --nproc_per_node=N -m attnvision train ...)",
                       description=f"Train a model on a dataset. On the built-in digits and cluttered-digits data "
                       f"the recipe defaults to the one that trains them well ({recipe}) unless an optimisation "
                       f"option (--opt, --lr, --batch-size, --weight-decay, --sched, ...) is given; elsewhere the "
                       f"defaults are TrainConfig's, shown with each option. --print-config shows what a command "
                       f"line resolves to.")
    p.add_argument("--config", metavar="FILE", help="a recipe: YAML or JSON of TrainConfig fields, or a run's "
                   "run.json (its recipe; a new run); options given on the command line override it")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML (loadable "
                   "with --config) and exit without training")
    add_config_options(p, exclude=("threads",), choices=dict(task=TASKS.names()))
    add_threads_option(p, "torch threads per process (under torchrun the cores are divided among them)")
    p.add_argument("--resume", nargs="?", const=True, metavar="DIR",
                   help="continue the run in DIR (or OUT) from its last.state.pt, with its stored recipe")
    p.set_defaults(func=run)


def run(args) -> int:
    fields = TrainConfig.__dataclass_fields__
    given = {k: v for k, v in vars(args).items() if k in fields}
    resume = given.pop("resume", False)
    config = getattr(args, "config", None)
    if resume and given.get("overwrite"):
        raise ValueError("train: --resume and --overwrite exclude each other: continue the run, or replace it")
    if resume and config:
        raise ValueError("train: --resume continues a run with its stored recipe; --config starts a new run from a "
                         "recipe: give one of them")
    if isinstance(resume, str):
        if given.get("out", resume) != resume:
            raise ValueError(f"train: --resume {resume} and --out {given['out']} name two directories; give one")
        given["out"] = resume
    given = config_from_dict(given)  # the command line's values, checked as a config file's are
    if config:
        given = {**load_config(config), **given}
    given.setdefault("out", DEFAULT_OUT)
    if not resume:
        given = _with_data_recipe(given)
    if getattr(args, "print_config", False):
        print(dump_config(TrainConfig(**given).to_dict()), end="")
        return 0
    given["threads"] = resolve_threads(given.get("threads"), "train", jobs=_local_processes(), warn=_is_main())
    settings = resumed_config(given["out"], given) if resume else given
    missing = [f"--{k.replace('_', '-')}" for k in ("model", "epochs") if k not in settings]
    if missing:
        raise ValueError(f"train: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required "
                         f"(on the command line or in --config FILE; or --resume DIR to continue a run)")
    cfg = TrainConfig(**{k: v for k, v in settings.items() if k in fields}, resume=bool(resume))
    if cfg.input_size is not None:
        c, h, w = cfg.input_size  # a list when read back from a run's record
        cfg.input_size = (c, h, w)
    try:
        summary = train(cfg)
    except NonFiniteLossError as e:
        print(f"attnvision train: {e}", file=sys.stderr)
        return 1
    finally:
        shutdown()
    if summary["interrupted"]:  # 128 + the signal's number, as a shell reports a process it stopped
        return 128 + signal.Signals[summary.get("stop_signal") or "SIGINT"]
    if summary["world_size"] == 1 or _is_main():
        best = get_task(cfg.task).best  # val_acc1, val_map or val_miou
        name = f"{cfg.model} on {cfg.backbone}" if get_task(cfg.task).uses_backbone else cfg.model
        print(f"{name} on {cfg.data}: {best.replace('_', ' ', 1)} {summary[best]:.{_digits(best)}f} (best "
              f"{summary['best_' + best]:.{_digits(best)}f} at epoch {summary['best_epoch']}), {summary['params']:,} "
              f"params, {summary['macs']:,} MACs; wrote {cfg.out}/")
    return 0


# options that make a recipe of their own: given any, the data's recipe is not used
_OPTIMISATION = ("batch_size", "lr", "opt", "momentum", "nesterov", "weight_decay", "sched", "warmup_epochs",
                 "label_smoothing", "layer_decay", "accum_steps")


def _with_data_recipe(given: dict) -> dict:
    """``given`` with the recipe its data trains well with (the built-in digits), unless an optimisation
    option is given: then TrainConfig's defaults fill the rest, as everywhere else."""
    spec = given.get("data", TrainConfig.data)
    recipe = DATASETS[parse_spec(spec)[0]].recipe
    if not recipe or any(k in given for k in _OPTIMISATION):
        return given
    return {**recipe, **given}


def _digits(metric: str) -> int:
    return 2 if metric == "val_acc1" else 4  # accuracy in %, AP and IoU in [0, 1]


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _local_processes() -> int:
    """The processes torchrun started on this machine (they share its cores), else 1."""
    count = os.environ.get("LOCAL_WORLD_SIZE", "")
    return int(count) if count.isdigit() and int(count) > 0 else 1
