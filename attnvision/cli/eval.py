"""``attnvision eval --run DIR`` or ``--model NAME --checkpoint PATH --data SPEC``: top-1/top-5 and loss;
for a detection run COCO AP (mAP, mAP50, mAP75, per-size AP; mask AP for Mask R-CNN), for a segmentation
run mIoU, pixel accuracy and per-class IoU. ``--model NAME --pretrained [TAG] --data SPEC`` evaluates the
published weights with their preprocessing and prints the measured top-1 beside the publisher's."""
from __future__ import annotations

import json
import os
import sys

from safetensors import safe_open

from .._table import format_table
from ..data import create_dataset, data_task, parse_spec
from ..factory import create_model
from ..io import atomic_write_text
from ..loading import model_from_record
from ..models._base import model_cfg
from ..train import evaluate
from ..train.distributed import resolve_device
from ..train.checkpoints import LAST_WEIGHTS
from ..train.rundir import create_run_model, describe, record_from_args
from ..train.tasks import get_task
from ..weights import load_checkpoint
from ..weights.pretrained import get_weights, is_tag, split_tag, weights_of
from ._options import json_object
from ._threads import add_threads_option, resolve_threads, torch_threads


def add_parser(sub):
    p = sub.add_parser("eval", help="evaluate a run, or a checkpoint (ours or the authors') on a dataset")
    p.add_argument("--run", metavar="DIR", help="a run directory of `attnvision train`: its model, data and "
                   "preprocessing, and its last.safetensors (other options may change the data or checkpoint)")
    p.add_argument("--model", help="registered model name (without --run)")
    p.add_argument("--checkpoint", help="weights file (safetensors or torch; default with --run: DIR/last.safetensors)")
    p.add_argument("--pretrained", nargs="?", const=True, metavar="TAG", help="evaluate the published weights of "
                   "--model (its default ones, or TAG; `attnvision models --pretrained` lists them) with their "
                   "preprocessing, beside the publisher's top-1; --data must have the weights' classes "
                   "(ImageNet-1k's)")
    p.add_argument("--data", help="dataset spec, as for `attnvision train` (default: the run's, else digits)")
    p.add_argument("--split", choices=("train", "val"), default="val")
    p.add_argument("--source", choices=("auto", "attnvision", "official"), default="auto",
                   help="key layout of the checkpoint (official: the authors')")
    p.add_argument("--model-kwargs", type=json_object, help="JSON dict passed to create_model (without --run)")
    p.add_argument("--attach", metavar="KIND", help="attention retrofitted at training (`train --attach KIND`)")
    p.add_argument("--attach-init", choices=("identity", "default"), default="identity")
    p.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0)
    add_threads_option(p)
    p.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    p.add_argument("--per-class", action="store_true", help="also per-class accuracy and the confusion matrix")
    p.add_argument("--out", help="write eval.json here (default: beside the checkpoint)")
    p.set_defaults(func=run)


def _model_and_data(args):
    """(model with random weights, its pretrained_cfg, the run record or None) from --run or --model."""
    import torch


    if args.run:
        record = record_from_args(args, "eval", ("model", "model_kwargs", "attach"))
        return record, record["pretrained_cfg"]
    if not args.model:
        raise ValueError("eval: give --run DIR (a training run) or --model NAME with --checkpoint PATH")
    if not args.checkpoint:
        raise ValueError("eval: --model needs --checkpoint PATH (or give --run DIR)")
    with torch.device("meta"):
        pc = model_cfg(create_model(args.model, **(args.model_kwargs or {})))
    return None, pc


def _checkpoint(args, record: dict | None) -> str:
    """``--checkpoint``, or the run's ``last.safetensors``; a run that has not finished is said on stderr, with
    where its weights stopped (what ``eval`` then measures is that point of its training)."""
    checkpoint = args.checkpoint or os.path.join(args.run, LAST_WEIGHTS)
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"eval: no checkpoint file at {checkpoint!r}")
    if record is not None and not args.checkpoint and record.get("status", "finished") != "finished":
        with safe_open(checkpoint, "pt") as f:
            meta = f.metadata() or {}
        epochs, batch = record.get("config", {}).get("epochs", "?"), int(meta.get("batch", 0))
        at = (f"{meta['epoch']} of {epochs} epochs done" + (f", {batch} batches into the next" if batch else "")
              if "epoch" in meta else "an unknown step")
        print(f"eval: {args.run} has not finished ({describe(args.run)}): evaluating its last saved weights "
              f"({at})", file=sys.stderr)
    return checkpoint


def run(args) -> int:
    with torch_threads(resolve_threads(args.threads, "eval")):
        return _run(args)


def _run(args) -> int:
    device = resolve_device(args.device, "eval")
    if args.pretrained:
        return _run_pretrained(args, device)
    record, pc = _model_and_data(args)
    if record and record.get("task", "classification") != "classification":
        return _run_dense(args, record, device)
    checkpoint = _checkpoint(args, record)
    data_spec = args.data or (record["data"] if record else "digits")
    size = tuple(args.input_size or pc["input_size"])
    data = create_dataset(data_spec, args.split, input_size=size, mean=pc["mean"], std=pc["std"],
                          crop_pct=pc.get("crop_pct", 0.875), augment=False)
    if args.input_size and tuple(data[0][0].shape) != size:
        raise ValueError(f"eval: --input-size {' '.join(map(str, size))} does not fit {data_spec!r}, whose images "
                         f"are {'x'.join(map(str, data[0][0].shape))}")
    if record:
        model = model_from_record(record, "eval")
        if (data.num_classes, data.in_chans) != (record["num_classes"], record["in_chans"]):
            raise ValueError(f"eval: the run's model takes {record['in_chans']}-channel images and has "
                             f"{record['num_classes']} classes; {data_spec!r} has {data.in_chans} and "
                             f"{data.num_classes}")
    else:
        model = create_run_model(args.model, args.model_kwargs or {}, num_classes=data.num_classes,
                                 in_chans=data.in_chans, attach=args.attach, attach_init=args.attach_init, who="eval")
    report = load_checkpoint(model, checkpoint, source=args.source)
    result = evaluate(model.to(device), data, batch_size=args.batch_size, workers=args.workers, device=device,
                      progress=True)
    name = record["model"] if record else args.model
    print(f"{name} ({report.source} checkpoint {checkpoint}) on {data_spec} {args.split}, {result.count} images:")
    print(f"top-1 {result.acc1:.2f}  top-5 {result.acc5:.2f}  loss {result.loss:.4f}")
    if args.per_class:
        names = getattr(data, "classes", None) or [str(i) for i in range(data.num_classes)]
        print(format_table(["class", "acc1 %", "images"],
                           [[n, f"{a:.2f}", int(c)] for n, a, c in
                            zip(names, result.per_class_acc, result.confusion.sum(1).tolist())]))
        print("confusion matrix (rows: true class, columns: predicted):")
        print(format_table(["", *names], [[n, *row] for n, row in zip(names, result.confusion.tolist())]))
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "eval.json")
    record_out = dict(model=name, checkpoint=checkpoint, source=report.source, data=data_spec,
                      split=args.split, **result.as_dict(per_class=args.per_class))
    atomic_write_text(out, json.dumps(record_out, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


def _run_pretrained(args, device) -> int:
    """Evaluate published weights (``create_model(NAME, pretrained=...)``) on ``--data`` with their preprocessing."""
    if args.run or args.checkpoint or args.attach:
        raise ValueError("eval: --pretrained evaluates the published weights of --model; it takes no --run, "
                         "--checkpoint or --attach")
    if args.source != "auto":
        raise ValueError("eval: --source is the layout of --checkpoint; published weights know their own")
    if not args.model or not args.data:
        raise ValueError("eval: --pretrained needs --model NAME (`attnvision models --pretrained` lists them) and "
                         "--data SPEC (ImageNet's validation images: imagefolder:PATH)")
    arch, tag = split_tag(args.model)
    if isinstance(args.pretrained, str) and not is_tag(arch, args.pretrained):
        tags = [w.tag for w in weights_of(arch)]
        raise ValueError(f"eval: --pretrained takes a tag of {arch}'s published weights "
                         f"({', '.join(tags) or 'none'}), got {args.pretrained!r}; evaluate a file with --checkpoint")
    weights = get_weights(arch, tag or (args.pretrained if isinstance(args.pretrained, str) else None), who="eval")
    kwargs = dict(args.model_kwargs or {})
    if kwargs.get("num_classes", weights.num_classes) != weights.num_classes:
        raise ValueError(f"eval: the {weights.tag} weights of {arch} have {weights.num_classes} classes; "
                         f"--model-kwargs sets num_classes={kwargs['num_classes']!r}")
    kwargs["num_classes"] = weights.num_classes
    model = create_model(args.model, pretrained=args.pretrained, **kwargs)
    pc = model_cfg(model)
    name, size = f"{pc['architecture']}.{pc['tag']}", tuple(args.input_size or pc["input_size"])
    data = create_dataset(args.data, args.split, input_size=size, mean=pc["mean"], std=pc["std"],
                          crop_pct=pc["crop_pct"], interpolation=pc["interpolation"], augment=False)
    if (data.num_classes, data.in_chans) != (model.num_classes, model.in_chans):
        raise ValueError(f"eval: the {name} weights classify {model.in_chans}-channel images into "
                         f"{model.num_classes} classes; {args.data!r} has {data.in_chans} channels and "
                         f"{data.num_classes} classes (for ImageNet-1k weights: its validation images, one folder "
                         f"per class, in the usual sorted order)")
    result = evaluate(model.to(device), data, batch_size=args.batch_size, workers=args.workers, device=device,
                      progress=True)
    published, where = pc.get("top1"), pc.get("hf_hub_id") or pc.get("url")
    print(f"{name} (published weights, {where}) on {args.data} {args.split}, {result.count} images at "
          f"{'x'.join(map(str, size[1:]))}, crop {pc['crop_pct']:g}, {pc['interpolation']}:")
    rows = [["measured", f"{result.acc1:.3f}", f"{result.acc5:.3f}"],
            ["publisher", "–" if published is None else f"{published:g}", "–"]]
    if published is not None:
        rows.append(["difference", f"{result.acc1 - published:+.3f}", ""])
    print(format_table(["", "top-1", "top-5"], rows))
    if size != tuple(pc["input_size"]):
        print(f"(the publisher measured at {'x'.join(map(str, pc['input_size'][1:]))}; --input-size changed it)")
    if args.out:
        atomic_write_text(args.out, json.dumps(dict(model=name, weights=where, data=args.data, split=args.split,
                                                    top1_published=published, **result.as_dict()), indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def _run_dense(args, record: dict, device) -> int:
    """Evaluate a detection or segmentation run (``record["task"]``) on its data's split."""

    task = get_task(record["task"])
    if args.per_class and task.name == "detection":
        raise ValueError("eval: --per-class is for classification and segmentation runs (a detection run reports "
                         "AP per object size)")
    if args.input_size:
        raise ValueError(f"eval: --input-size does not apply to a {task.name} run")
    checkpoint = _checkpoint(args, record)
    data_spec = args.data or record["data"]
    if data_task(data_spec) != task.name:
        raise ValueError(f"eval: the run is a {task.name} run; {data_spec!r} is {data_task(data_spec)} data")
    kw = dict(num_classes=record["num_classes"]) if parse_spec(data_spec)[0] == "segfolder" else {}
    data = create_dataset(data_spec, args.split, augment=False, **kw)
    if data.num_classes != record["num_classes"]:
        raise ValueError(f"eval: the run's model has {record['num_classes']} classes; {data_spec!r} has "
                         f"{data.num_classes}")
    model = model_from_record(record, "eval")
    report = load_checkpoint(model, checkpoint, source=args.source)
    values, result = task.evaluate(model.to(device), data, batch_size=args.batch_size, device=device,
                                   workers=args.workers)
    name = f"{record['model']} on {record['backbone']}"
    print(f"{name} ({report.source} checkpoint {checkpoint}) on {data_spec} {args.split}, {len(data)} images:")
    print("  ".join(f"{k[4:]} {v:.4f}" for k, v in result.items() if k.startswith("val_") and isinstance(v, float)))
    per_class = result.get("val_per_class_iou")
    if per_class is not None and args.per_class:
        names = list(getattr(data, "classes", None) or [str(i) for i in range(data.num_classes)])
        print(format_table(["class", "IoU"],
                           [[n, "absent" if v != v else f"{v:.4f}"] for n, v in zip(names, per_class)]))
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "eval.json")
    record_out = dict(model=record["model"], backbone=record["backbone"], task=task.name, checkpoint=checkpoint,
                      source=report.source, data=data_spec, split=args.split, count=len(data),
                      **{k[4:] if k.startswith("val_") else k: _no_nan(v) for k, v in result.items()})
    atomic_write_text(out, json.dumps(record_out, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


def _no_nan(value):
    """JSON has no NaN: an undefined IoU (a class absent from predictions and targets) is written as null."""
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return None if isinstance(value, float) and value != value else value
