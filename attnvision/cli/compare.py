"""``attnvision compare [--models A,B] [--set KEY=V1,V2] ...``: a fair grid of models × settings × seeds.

With no arguments it runs the default comparison: a small ResNet and the same network with
SE, ECA, BAM and CBAM on ``cluttered-digits``, 2 seeds.
"""
from __future__ import annotations

import json
import os
import sys


def add_parser(sub):
    from ..train.compare import DEFAULT

    p = sub.add_parser("compare", help="train a grid of models and settings over seeds; write results.csv/.md/.png")
    p.add_argument("--models", help=f"comma-separated model names (default: {','.join(DEFAULT['models'])})")
    p.add_argument("--set", dest="sets", action="append", metavar="KEY=V1,V2",
                   help="a grid axis: a dotted model keyword (attn_kwargs.reduction=8,16) or train.FIELD=V1,V2; "
                   "repeatable")
    p.add_argument("--data", help=f"dataset spec (default: {DEFAULT['data']})")
    p.add_argument("--epochs", type=int, help=f"epochs per run (default: {DEFAULT['epochs']})")
    p.add_argument("--seeds", type=int, help=f"seeds per setting (default: {DEFAULT['seeds']})")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--opt", choices=("sgd", "adamw"))
    p.add_argument("--model-kwargs", type=json.loads, help="JSON dict passed to every create_model")
    p.add_argument("--threads", type=int, help="torch threads when --jobs is 1")
    p.add_argument("--jobs", type=int, help="runs at once, one thread each (default: the number of CPUs, at most 2)")
    p.add_argument("--out", default="runs/compare", help="output directory (default runs/compare)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..cli._table import format_table
    from ..train.compare import DEFAULT, compare, group, parse_sets

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    # the default recipe; its model keywords (the small ResNet's stem) only go with the default models
    recipe = {k: v for k, v in DEFAULT["recipe"].items() if k != "model_kwargs" or models is None}
    for key in ("batch_size", "lr", "opt", "model_kwargs", "threads"):
        if getattr(args, key) is not None:
            recipe[key] = getattr(args, key)
    jobs = args.jobs or min(2, os.cpu_count() or 1)
    rows = compare(models, parse_sets(args.sets), data=args.data, epochs=args.epochs, seeds=args.seeds,
                   out=args.out, recipe=recipe, jobs=jobs)
    if not rows:
        return 130
    table = [[g["model"], g["settings"], f"{g['val_acc1'][0]:.2f} ± {g['val_acc1'][1]:.2f}",
              f"{int(g['params'][0]):,}", f"{g['macs'][0] / 1e6:.2f} M"] for g in group(rows)]
    print(format_table(["model", "settings", "val acc1 %", "params", "MACs"], table))
    print(f"wrote {os.path.join(args.out, 'results.csv')}, results.md, results.png", file=sys.stderr)
    return 0
