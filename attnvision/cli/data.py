"""``attnvision data export SPEC --split val --count N --out DIR``: a dataset's images as PNG files."""
from __future__ import annotations

import sys

from ..data import spec_names
from ..data.export import export_images


def add_parser(sub):
    p = sub.add_parser("data", help="work with datasets: `data export` writes images as PNG files")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    e = actions.add_parser("export", help="write images of a dataset as PNG files (un-normalised), with labels.csv")
    e.add_argument("spec", help=f"a classification data spec: {', '.join(spec_names('classification'))}")
    e.add_argument("--split", choices=("train", "val"), default="val")
    e.add_argument("--count", type=int, default=8, help="number of images (default 8)")
    e.add_argument("--start", type=int, default=0, help="index of the first image (default 0)")
    e.add_argument("--imagefolder", action="store_true",
                   help="write OUT/SPLIT/CLASS/INDEX.png, the layout imagefolder:OUT reads")
    e.add_argument("--out", required=True, help="output folder")
    e.set_defaults(func=run)


def run(args) -> int:
    paths = export_images(args.spec, args.out, split=args.split, count=args.count, start=args.start,
                          imagefolder=args.imagefolder)
    for path in paths:
        print(path)
    print(f"data export: wrote {len(paths)} images and labels.csv to {args.out}", file=sys.stderr)
    return 0
