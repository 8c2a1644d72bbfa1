"""``attnvision export RUN_DIR|MODEL --format onnx|exported-program``: a model as a checked ONNX or
``torch.export`` file (:mod:`attnvision.export`)."""
from __future__ import annotations

import os

from ..export import FORMATS, SUFFIXES, check_format, export_model
from ..factory import create_model
from ..loading import model_from_record
from ..models._base import model_cfg
from ..train.checkpoints import BEST_WEIGHTS, LAST_WEIGHTS
from ..train.rundir import read_record
from ..weights import load_checkpoint
from ._options import json_object
from ._threads import add_threads_option, resolve_threads, torch_threads


def add_parser(sub):
    p = sub.add_parser("export", help="write a run's or a registered model's network as ONNX or a torch.export "
                       "program, checked against the eager model")
    p.add_argument("target", metavar="RUN_DIR|MODEL", help="a run directory of `attnvision train` (its model and "
                   "weights), or a registered model name (random weights unless --checkpoint)")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (checked in onnxruntime) or "
                   "exported-program (torch.export.save, checked with torch.export.load) (default onnx)")
    p.add_argument("--out", metavar="FILE", help="the file to write (default: RUN_DIR/WEIGHTS.onnx|.pt2 for a run, "
                   "MODEL.onnx|.pt2 here for a model name)")
    p.add_argument("--dynamic-batch", action="store_true", help="a symbolic batch dimension (checked at batches 1 "
                   "and 3); otherwise the batch is fixed at --batch-size")
    p.add_argument("--batch-size", type=int, default=1, help="the fixed batch (default 1)")
    p.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"),
                   help="default: the run's input size, or the model's pretrained_cfg input_size")
    p.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default: the exporter's)")
    p.add_argument("--weights", choices=("last", "best"), default="last",
                   help="a run's weights file: last.safetensors or best.safetensors (default last)")
    p.add_argument("--checkpoint", metavar="PATH", help="weights file (safetensors or torch) instead of the run's "
                   "or the random initialisation")
    p.add_argument("--num-classes", type=int, help="a model name's classes (default 1000)")
    p.add_argument("--model-kwargs", type=json_object, help="JSON dict passed to create_model (a model name only)")
    add_threads_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    with torch_threads(resolve_threads(args.threads, "export", warn=False)):
        return _run(args)


def _run(args) -> int:
    check_format(args.format)  # before building anything: a missing library is said at once
    if args.opset is not None and args.format != "onnx":
        raise ValueError(f"export: --opset is for --format onnx, not {args.format}")
    if args.dynamic_batch and args.batch_size != 1:
        raise ValueError("export: --dynamic-batch and --batch-size exclude each other (a dynamic batch is checked at "
                         "batches 1 and 3)")
    suffix = SUFFIXES[args.format]
    if os.path.isdir(args.target):
        model, weights, size = _run_model(args)
        out = args.out or os.path.join(args.target, os.path.splitext(os.path.basename(weights))[0] + suffix)
    else:
        if args.weights != "last":
            raise ValueError("export: --weights picks a run's weights file; give a run directory, or --checkpoint "
                             "PATH with a model name")
        model = create_model(args.target, num_classes=args.num_classes or 1000, **(args.model_kwargs or {}))
        if args.checkpoint:
            load_checkpoint(model, args.checkpoint)
        size = model_cfg(model)["input_size"]
        out = args.out or args.target + suffix
    result = export_model(model, out, format=args.format, input_size=tuple(args.input_size or size),
                          batch_size=args.batch_size, dynamic_batch=args.dynamic_batch, opset=args.opset)
    print(result.describe())
    return 0


def _run_model(args):
    """(model with the run's weights, the weights file, the run's input size) of the run in ``args.target``."""
    if args.model_kwargs or args.num_classes:
        raise ValueError(f"export: {args.target} is a run directory, which gives the model already; drop "
                         f"--model-kwargs and --num-classes")
    record = read_record(args.target, "export")
    task = record.get("task", "classification")
    if task != "classification":
        raise ValueError(f"export: {args.target} is a {task} run; export takes classification runs and models "
                         f"(their one output tensor)")
    weights = args.checkpoint or os.path.join(args.target, BEST_WEIGHTS if args.weights == "best" else LAST_WEIGHTS)
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"export: no weights file at {weights!r} (the run has not saved "
                                f"{'a best epoch' if args.weights == 'best' else 'any weights'} yet)")
    model = model_from_record(record, "export")
    load_checkpoint(model, weights)
    return model, weights, record["pretrained_cfg"]["input_size"]
