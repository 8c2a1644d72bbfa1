"""``attnvision profile NAME [--input-size C H W]``: parameters and MACs, split by operator."""
from __future__ import annotations

import json

from .._table import format_table
from ..factory import create_model
from ..models._base import model_cfg
from ..profiling import profile
from ._options import json_object
from ._threads import add_threads_option, resolve_threads, torch_threads


def add_parser(sub):
    p = sub.add_parser("profile", help="count parameters and multiply-adds of a model")
    p.add_argument("name", help="registered model name (see `attnvision models`)")
    p.add_argument("--input-size", nargs="+", type=int, metavar="N",
                   help="C H W, or B C H W (default: the model's pretrained_cfg input_size, batch 1)")
    p.add_argument("--batch-size", type=int, help="batch B (default 1, or the B of a 4-number --input-size)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--model-kwargs", type=json_object, default={}, help="JSON dict passed to create_model")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_threads_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    # counting takes no time worth a warning about a busy machine
    with torch_threads(resolve_threads(args.threads, "profile", warn=False)):
        return _run(args)


def _run(args) -> int:
    import torch


    with torch.device("meta"):
        model = create_model(args.name, num_classes=args.num_classes, **args.model_kwargs)
    size = tuple(args.input_size or model_cfg(model)["input_size"])
    if len(size) not in (3, 4):
        raise ValueError(f"profile: --input-size takes C H W or B C H W, got {len(size)} numbers {list(size)}")
    if len(size) == 4 and args.batch_size is not None and args.batch_size != size[0]:
        raise ValueError(f"profile: --batch-size {args.batch_size} contradicts the batch {size[0]} of --input-size "
                         f"{' '.join(map(str, size))}; give one of them")
    if len(size) == 3:
        size = (args.batch_size or 1, *size)
    p = profile(model, size)
    p.name = args.name
    if args.json:
        print(json.dumps(p.as_dict(), indent=1))
        return 0
    rows = [[op, f"{macs:,}"] for op, macs in sorted(p.by_op.items(), key=lambda kv: -kv[1])]
    print(f"{args.name}  input {'x'.join(map(str, size))}")
    print(f"parameters  {p.params:,} ({p.mparams:.2f} M)")
    print(f"MACs        {p.macs:,} ({p.gmacs:.3f} G)\n")
    print(format_table(["operator", "MACs"], rows))
    return 0
