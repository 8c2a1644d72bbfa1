"""``attnvision eval --model NAME --checkpoint PATH --data SPEC``: top-1/top-5 and loss of a checkpoint."""
from __future__ import annotations

import json
import os


def add_parser(sub):
    p = sub.add_parser("eval", help="evaluate a checkpoint (ours or the authors') on a dataset")
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--checkpoint", required=True, help="weights file (safetensors or torch)")
    p.add_argument("--data", default="digits", help="dataset spec, as for `attnvision train`")
    p.add_argument("--split", choices=("train", "val"), default="val")
    p.add_argument("--source", choices=("auto", "attnvision", "official"), default="auto",
                   help="key layout of the checkpoint (official: the authors')")
    p.add_argument("--model-kwargs", type=json.loads, default={}, help="JSON dict passed to create_model")
    p.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    p.add_argument("--per-class", action="store_true", help="also per-class accuracy and the confusion matrix")
    p.add_argument("--out", help="write eval.json here (default: beside the checkpoint)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from .. import load_checkpoint
    from ..data import create_dataset
    from ..io import atomic_write_text
    from ..registry import create_model
    from ..train import evaluate
    from ._table import format_table

    if not os.path.isfile(args.checkpoint):
        raise FileNotFoundError(f"no checkpoint file at {args.checkpoint!r}")
    with torch.device("meta"):
        pc = create_model(args.model, **args.model_kwargs).pretrained_cfg
    data = create_dataset(args.data, args.split, input_size=tuple(args.input_size or pc["input_size"]),
                          mean=pc["mean"], std=pc["std"], crop_pct=pc.get("crop_pct", 0.875), augment=False)
    model = create_model(args.model, num_classes=data.num_classes, in_chans=data.in_chans, **args.model_kwargs)
    report = load_checkpoint(model, args.checkpoint, source=args.source)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    result = evaluate(model.to(device), data, batch_size=args.batch_size, workers=args.workers, device=device,
                      progress=True)
    print(f"{args.model} ({report.source} checkpoint {args.checkpoint}) on {args.data} {args.split}, "
          f"{result.count} images:")
    print(f"top-1 {result.acc1:.2f}  top-5 {result.acc5:.2f}  loss {result.loss:.4f}")
    if args.per_class:
        names = getattr(data, "classes", None) or [str(i) for i in range(data.num_classes)]
        print(format_table(["class", "acc1 %", "images"],
                           [[n, f"{a:.2f}", int(c)] for n, a, c in
                            zip(names, result.per_class_acc, result.confusion.sum(1).tolist())]))
        print("confusion matrix (rows: true class, columns: predicted):")
        print(format_table(["", *names], [[n, *row] for n, row in zip(names, result.confusion.tolist())]))
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "eval.json")
    record = dict(model=args.model, checkpoint=args.checkpoint, source=report.source, data=args.data,
                  split=args.split, **result.as_dict(per_class=args.per_class))
    atomic_write_text(out, json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")
    return 0
