"""``attnvision train --model NAME --data SPEC --epochs N ...``: train one model (torchrun for many processes)."""
from __future__ import annotations

import json
import sys


def add_parser(sub):
    p = sub.add_parser("train", help="train a model on a dataset (torchrun --nproc_per_node=N -m attnvision train ...)")
    p.add_argument("--model", required=True, help="registered model name (see `attnvision models`)")
    p.add_argument("--data", default="digits", help="digits | cluttered-digits | imagefolder:PATH | cifar10:PATH | "
                   "cifar100:PATH | synthetic[:CxHxW] (default: digits)")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=128, help="global batch, split over processes (default 128)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 0.1 for sgd, 1e-3 for adamw)")
    p.add_argument("--opt", choices=("sgd", "adamw"), default="sgd")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, help="on conv/linear weights (default: 5e-4 sgd, 0.05 adamw)")
    p.add_argument("--sched", choices=("cosine", "step", "constant"), default="cosine")
    p.add_argument("--warmup-epochs", type=float, default=0.0)
    p.add_argument("--step-epochs", type=float, default=30.0, help="step schedule: decay every N epochs")
    p.add_argument("--step-gamma", type=float, default=0.1)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--clip-grad", type=float, help="clip the gradients' global norm to this value")
    p.add_argument("--amp", choices=("bf16", "fp16"), help="mixed precision (fp16 on GPUs only)")
    p.add_argument("--ema", type=float, metavar="DECAY", help="keep an EMA of the weights (evaluated and saved)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels: resumed runs match exactly")
    p.add_argument("--sync-bn", action="store_true",
                   help="under torchrun, normalise over the global batch (SyncBatchNorm on GPUs, its CPU equivalent "
                        "otherwise): the weights then equal one process's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-kwargs", type=json.loads, default={}, help="JSON dict passed to create_model")
    p.add_argument("--attach", metavar="KIND", help="retrofit attention KIND into the model (attnvision.attach)")
    p.add_argument("--attach-init", choices=("identity", "default"), default="identity")
    p.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"),
                   help="crop size for image files (default: the model's pretrained_cfg)")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes")
    p.add_argument("--threads", type=int, help="torch threads per process")
    p.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    p.add_argument("--out", default="runs/train", help="run directory (default runs/train)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.state.pt")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..train import NonFiniteLossError, TrainConfig, train
    from ..train.distributed import shutdown

    fields = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    if cfg.input_size is not None:
        cfg.input_size = tuple(cfg.input_size)
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
        print(f"{cfg.model} on {cfg.data}: val acc1 {summary['val_acc1']:.2f} (best {summary['best_val_acc1']:.2f} "
              f"at epoch {summary['best_epoch']}), {summary['params']:,} params, {summary['macs']:,} MACs; "
              f"wrote {cfg.out}/")
    return 0


def _is_main() -> bool:
    import os
    return os.environ.get("RANK", "0") == "0"
