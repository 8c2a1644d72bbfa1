"""``attnvision models [PATTERN]``: the registered models, with parameters and MACs, or (``--pretrained``)
their published weights."""
from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from .._table import format_table
from ..factory import create_model, list_models
from ..models._base import IMAGENET_MEAN, IMAGENET_STD, model_cfg
from ..profiling import profile
from ..weights.pretrained import weights_of


def add_parser(sub):
    p = sub.add_parser("models", help="list registered models (fnmatch PATTERN)")
    p.add_argument("pattern", nargs="?", default="*")
    p.add_argument("--count", action="store_true", help="also count parameters (with a 1000-class "
                   "head) and MACs at each model's input size")
    p.add_argument("--pretrained", action="store_true", help="list the published ImageNet weights instead: "
                   "tag, the publisher's top-1, preprocessing and where they are (`create_model(NAME.TAG, "
                   "pretrained=True)`; 'manual download' ones: pretrained=PATH)")
    p.set_defaults(func=run)


def weights_table(pattern: str = "*", markdown: bool = False) -> str | None:
    """The published weights whose ``model.tag`` matches ``pattern`` (a model pattern matches all its tags),
    one row each, a model's default first; None when none match."""
    rows = []
    for tagged in list_models(pattern, include_tags=True):
        name, _, tag = tagged.partition(".")
        if not tag:
            continue
        entries = weights_of(name)
        w = next(e for e in entries if e.tag == tag)
        size = "x".join(map(str, w.input_size[1:]))
        norm = "" if (w.mean, w.std) == (IMAGENET_MEAN, IMAGENET_STD) else f", mean/std {w.mean[0]:g}/{w.std[0]:g}"
        rows.append((name, entries.index(w), [
            name, tag, "yes" if w is entries[0] else "", "–" if w.top1 is None else f"{w.top1:g}",
            f"{size}, crop {w.crop_pct:g}, {w.interpolation}{norm}", w.license.split(" ")[0],
            f"`{w.where}`" if markdown else w.where]))
    if not rows:
        return None
    return format_table(["model", "tag", "default", "top-1 (publisher)", "evaluated at", "license", "where"],
                        [row for *_, row in sorted(rows, key=lambda r: r[:2])], markdown=markdown)


def run(args) -> int:
    if args.pretrained:
        if args.count:
            raise ValueError("models: --count and --pretrained list different things; give one")
        table = weights_table(args.pattern)
        if table is None:
            print(f"no published weights match {args.pattern!r} (`attnvision models` lists the models)")
            return 1
        print(table)
        return 0
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
        size = (1, *model_cfg(model)["input_size"])
        p = profile(model, size)
        rows.append([name, f"{p.params:,}", f"{p.gmacs:.2f}", "x".join(map(str, size[2:]))])
    print(format_table(["model", "params (1000 classes)", "GMACs", "input"], rows))
    return 0
