"""``attnvision models [PATTERN]``: the registered models, with parameters and MACs."""
from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from .._table import format_table
from ..factory import create_model, list_models
from ..profiling import profile


def add_parser(sub):
    p = sub.add_parser("models", help="list registered models (fnmatch PATTERN)")
    p.add_argument("pattern", nargs="?", default="*")
    p.add_argument("--count", action="store_true", help="also count parameters (with a 1000-class "
                   "head) and MACs at each model's input size")
    p.set_defaults(func=run)


def run(args) -> int:
    names = list_models(args.pattern)
    if not names:
        print(f"no model matches {args.pattern!r}")
        return 1
    if not args.count:
        print("\n".join(names))
        return 0
    rows = []
    # building and profiling every model takes a while: a bar on stderr, so that stdout keeps only the table
    for name in tqdm(names, desc="counting", unit="model", file=sys.stderr, dynamic_ncols=True, leave=False):
        with torch.device("meta"):
            model = create_model(name)
        size = (1, *model.pretrained_cfg["input_size"])
        p = profile(model, size)
        rows.append([name, f"{p.params:,}", f"{p.gmacs:.2f}", "x".join(map(str, size[2:]))])
    print(format_table(["model", "params (1000 classes)", "GMACs", "input"], rows))
    return 0
