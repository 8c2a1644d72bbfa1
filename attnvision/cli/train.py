"""``attnvision train --model NAME --data SPEC --epochs N ...``: train one model (torchrun for many processes)."""
from __future__ import annotations

import argparse
import os
import sys

from ..train import NonFiniteLossError, TrainConfig, train
from ..train.distributed import shutdown
from ..train.rundir import resumed_config
from ..train.tasks import get_task
from ._options import json_object
from ._threads import add_threads_option, resolve_threads

DEFAULT_OUT = "runs/train"


def add_parser(sub):
    # No defaults here: the options given are exactly the attributes set, so that `--resume DIR`
    # can tell them from the stored recipe; the defaults are TrainConfig's.
    p = sub.add_parser("train", argument_default=argparse.SUPPRESS,
                       help="train a model on a dataset (torchrun --nproc_per_node=N -m attnvision train ...)")
    p.add_argument("--task", choices=("classification", "detection", "segmentation"),
                   help="what to train (default classification); detection and segmentation put the head --model "
                   "(fasterrcnn, maskrcnn, retinanet, fcos; semantic_fpn, upernet) on --backbone")
    p.add_argument("--model", help="registered model name (see `attnvision models`), or the detection/segmentation "
                   "head with --task")
    p.add_argument("--backbone", help="with --task detection|segmentation: the backbone (a registered name, "
                   "timm:NAME or torchvision:NAME)")
    p.add_argument("--data", help="digits | cluttered-digits | imagefolder:PATH | cifar10:PATH | "
                   "cifar100:PATH | synthetic[:CxHxW] (default: digits); detection: cluttered-digits-det | "
                   "coco:PATH | voc:PATH; segmentation: cluttered-digits-seg | segfolder:PATH")
    p.add_argument("--num-classes", type=int, help="segfolder: classes of its masks (elsewhere they follow the data)")
    p.add_argument("--min-size", type=int, help="detection: resize the shorter side to this (default: 64 for the "
                   "built-in canvases, else 800)")
    p.add_argument("--max-size", type=int, help="detection: longest side at most this (default: 64 for the "
                   "built-in canvases, else 1333)")
    p.add_argument("--trainable-stages", type=int, help="detection/segmentation: backbone stages trained, from the "
                   "last (default: all)")
    p.add_argument("--epochs", type=int, help="number of epochs (with --resume DIR: may grow)")
    p.add_argument("--batch-size", type=int, help="global batch, split over processes (default 128)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 0.1 for sgd, 1e-3 for adamw)")
    p.add_argument("--opt", choices=("sgd", "adamw"), help="optimiser (default sgd)")
    p.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, help="on conv/linear weights, not on what the model's "
                   "no_weight_decay() names (default: 5e-4 sgd, 0.05 adamw)")
    p.add_argument("--layer-decay", type=float, metavar="D", help="layer-wise lr decay: the model's group_matcher() "
                   "groups, stem to head, train at lr·D^(L−i) (the head at lr; e.g. 0.75 to fine-tune)")
    p.add_argument("--accum-steps", type=int, metavar="N", help="gradient accumulation: one optimiser step every N "
                   "batches of --batch-size (the step of one batch N times larger; default 1)")
    p.add_argument("--sched", choices=("cosine", "step", "constant"), help="schedule (default cosine)")
    p.add_argument("--warmup-epochs", type=float, help="linear warm-up (default 0)")
    p.add_argument("--step-epochs", type=float, help="step schedule: decay every N epochs (default 30)")
    p.add_argument("--step-gamma", type=float, help="step schedule: decay factor (default 0.1)")
    p.add_argument("--label-smoothing", type=float, help="(default 0)")
    p.add_argument("--auto-augment", choices=("ra", "ta_wide", "augmix"),
                   help="classification: RandAugment, TrivialAugment Wide or AugMix on each training image")
    p.add_argument("--aa-magnitude", type=int, metavar="M",
                   help="ra: magnitude 0..30 (default 9); augmix: severity 1..10 (default 3)")
    p.add_argument("--aa-num-ops", type=int, metavar="N", help="ra: operations per image (default 2)")
    p.add_argument("--color-jitter", type=float, metavar="S",
                   help="classification: brightness, contrast and saturation factors in [1-S, 1+S] (default 0)")
    p.add_argument("--random-erase", type=float, metavar="P",
                   help="classification: erase one rectangle of each training image with probability P (default 0)")
    p.add_argument("--mixup-alpha", type=float, metavar="A", help="classification: MixUp with Beta(A, A) (default 0)")
    p.add_argument("--cutmix-alpha", type=float, metavar="A",
                   help="classification: CutMix with Beta(A, A) (default 0); with --mixup-alpha, one of the two per "
                   "batch")
    p.add_argument("--clip-grad", type=float, help="clip the gradients' global norm to this value")
    p.add_argument("--amp", choices=("bf16", "fp16"), help="mixed precision (fp16 on GPUs only)")
    p.add_argument("--ema", type=float, metavar="DECAY", help="keep an EMA of the weights (evaluated and saved)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels: resumed runs match exactly")
    p.add_argument("--sync-bn", action="store_true",
                   help="under torchrun, normalise over the global batch (SyncBatchNorm on GPUs, its CPU equivalent "
                        "otherwise): the weights then equal one process's")
    p.add_argument("--seed", type=int, help="(default 0)")
    p.add_argument("--model-kwargs", type=json_object, help="JSON dict passed to create_model (num_classes and "
                   "in_chans follow the data); with --task, to create_detector/create_segmenter")
    p.add_argument("--attach", metavar="KIND", help="retrofit attention KIND into the model (attnvision.attach)")
    p.add_argument("--attach-init", choices=("identity", "default"), help="(default identity)")
    p.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"),
                   help="crop size for image files (default: the model's pretrained_cfg)")
    p.add_argument("--workers", type=int, help="data-loading processes (default 0)")
    add_threads_option(p, "torch threads per process (under torchrun the cores are divided among them)")
    p.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    p.add_argument("--out", help=f"run directory (default {DEFAULT_OUT}); train refuses one holding another run")
    p.add_argument("--resume", nargs="?", const=True, metavar="DIR",
                   help="continue the run in DIR (or OUT) from its last.state.pt, with its stored recipe")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in OUT")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    fields = TrainConfig.__dataclass_fields__
    given = {k: v for k, v in vars(args).items() if k in fields}
    resume = given.pop("resume", False)
    if resume and given.get("overwrite"):
        raise ValueError("train: --resume and --overwrite exclude each other: continue the run, or replace it")
    if isinstance(resume, str):
        if given.get("out", resume) != resume:
            raise ValueError(f"train: --resume {resume} and --out {given['out']} name two directories; give one")
        given["out"] = resume
    given.setdefault("out", DEFAULT_OUT)
    given["threads"] = resolve_threads(given.get("threads"), "train", jobs=_local_processes(), warn=_is_main())
    settings = resumed_config(given["out"], given) if resume else given
    missing = [f"--{k}" for k in ("model", "epochs") if k not in settings]
    if missing:
        raise ValueError(f"train: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required "
                         f"(or --resume DIR to continue a run)")
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
    if summary["interrupted"]:
        return 130
    if summary["world_size"] == 1 or _is_main():
        best = get_task(cfg.task).best  # val_acc1, val_map or val_miou
        name = cfg.model if cfg.task == "classification" else f"{cfg.model} on {cfg.backbone}"
        print(f"{name} on {cfg.data}: {best.replace('_', ' ', 1)} {summary[best]:.{_digits(best)}f} (best "
              f"{summary['best_' + best]:.{_digits(best)}f} at epoch {summary['best_epoch']}), {summary['params']:,} "
              f"params, {summary['macs']:,} MACs; wrote {cfg.out}/")
    return 0


def _digits(metric: str) -> int:
    return 2 if metric == "val_acc1" else 4  # accuracy in %, AP and IoU in [0, 1]


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _local_processes() -> int:
    """The processes torchrun started on this machine (they share its cores), else 1."""
    count = os.environ.get("LOCAL_WORLD_SIZE", "")
    return int(count) if count.isdigit() and int(count) > 0 else 1
