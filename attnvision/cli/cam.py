"""``attnvision cam --model NAME --image PATH``: Grad-CAM, predictions and attention maps in one figure.

For a detection run (``--run DIR``) the figure shows the detections and the Grad-CAM map of one of them
(``--detection K``, its box score explained); for a segmentation run the predicted classes and the map of
one class (``--class C``, default: the non-background class predicted on most pixels).
"""
from __future__ import annotations

from ..explain import EXPLAIN_METHODS
from ..explain.dense import detection_cam, segmentation_cam
from ..explain.figure import dense_figure, explain_image, save_figure
from ..factory import create_model
from ..loading import model_from_record
from ..models._base import model_cfg
from ..train.rundir import record_from_args
from ..weights import load_checkpoint
from ._options import json_object
from ._threads import add_threads_option, resolve_threads, torch_threads

RUN_MODEL_FLAGS = ("model", "model_kwargs", "num_classes")  # what --run gives already


def add_parser(sub):
    p = sub.add_parser("cam", help="draw where a model looks: Grad-CAM, top classes and attention maps")
    p.add_argument("--run", metavar="DIR", help="a run directory of `attnvision train`: its model, preprocessing, "
                   "class names and last.safetensors")
    p.add_argument("--model", help="registered model name (see `attnvision models`), without --run")
    p.add_argument("--checkpoint", help="local checkpoint to load (ours or the authors' key layout; "
                   "default with --run: DIR/last.safetensors)")
    p.add_argument("--image", required=True, help="image file (anything Pillow reads)")
    p.add_argument("--class", dest="target", type=int, help="class to explain (default: the top prediction)")
    p.add_argument("--out", default="cam.png", help="output figure (default cam.png; format from the suffix)")
    p.add_argument("--num-classes", type=int, help="classifier outputs, without --run (default 1000)")
    p.add_argument("--model-kwargs", type=json_object, help="JSON dict passed to create_model, without --run")
    p.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"),
                   help="model input size (default: the model's pretrained_cfg)")
    p.add_argument("--method", choices=EXPLAIN_METHODS.names(), default="gradcam")
    p.add_argument("--layer", default="auto", help="module to explain (default: the last stage)")
    p.add_argument("--labels", help="text file with one class name per line (default: ImageNet names for "
                   "1000 classes, else 'class K')")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--box", nargs=4, type=int, metavar=("X0", "Y0", "X1", "Y1"),
                   help="object box in input pixels (after resizing and cropping), end-exclusive: drawn, "
                   "and its CAM energy and pointing-game result are reported")
    p.add_argument("--max-maps", type=int, default=8, help="at most this many spatial attention maps")
    p.add_argument("--detection", type=int, default=0, help="detection runs: the detection to explain, by rank "
                   "of score (default 0, the highest)")
    p.add_argument("--score-thresh", type=float, default=0.5,
                   help="detection runs: draw the detections scoring at least this (default 0.5); the one "
                   "explained is drawn in red whatever its score, and the title gives its score")
    p.add_argument("--dpi", type=int, default=100)
    add_threads_option(p)
    p.set_defaults(func=run)


def load_image(path, input_size, crop_pct: float, mean, std, in_chans: int = 3):
    """Read an image and apply the evaluation transform: resize to size / crop_pct, centre crop, normalise.

    Returns (normalised (C, H, W) tensor, (H, W, 3) display array in [0, 1]).
    """
    import math
    import os

    import torch
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import functional as TF

    if not os.path.isfile(path):
        raise FileNotFoundError(f"cam: no image file at {path!r}")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if in_chans == 3 else "L")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cam: cannot read {path!r} as an image ({e})") from None
    height, width = input_size
    if height == width:
        scale = math.floor(height / crop_pct)
    else:
        scale = [math.floor(height / crop_pct), math.floor(width / crop_pct)]
    im = TF.center_crop(TF.resize(im, scale, antialias=True), [height, width])
    x = TF.to_tensor(im)                                                   # (C, H, W) in [0, 1]
    display = x.expand(3, -1, -1) if x.shape[0] == 1 else x
    normalised = TF.normalize(x, mean, std) if mean is not None else x
    return normalised.to(torch.float32), display.permute(1, 2, 0).numpy()


def class_names(labels_path, num_classes: int):
    if labels_path:
        with open(labels_path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        if len(names) != num_classes:
            raise ValueError(f"cam: {labels_path!r} names {len(names)} classes, the model has {num_classes}")
        return names
    if num_classes == 1000:
        from torchvision.models import ResNet50_Weights
        return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    return None


def _model(args):
    """(model with its weights, class names or None, figure title) from --run or --model."""
    import os


    if args.run:
        record = record_from_args(args, "cam", RUN_MODEL_FLAGS)
        model = model_from_record(record, "cam")
        checkpoint = args.checkpoint or os.path.join(args.run, "last.safetensors")
        load_checkpoint(model, checkpoint)
        names = class_names(args.labels, record["num_classes"]) if args.labels else list(record["classes"])
        return model, names, f"{record['model']} ({os.path.basename(os.path.normpath(args.run))})"
    if not args.model:
        raise ValueError("cam: give --run DIR (a training run) or --model NAME")
    num_classes = args.num_classes or 1000
    model = create_model(args.model, num_classes=num_classes, pretrained=args.checkpoint or False,
                         **(args.model_kwargs or {}))
    title = args.model + (" (random weights)" if not args.checkpoint else "")
    return model, class_names(args.labels, num_classes), title


def run(args) -> int:
    with torch_threads(resolve_threads(args.threads, "cam")):
        return _run(args)


def _run(args) -> int:
    import torch


    for option, value, low in (("--topk", args.topk, 1), ("--max-maps", args.max_maps, 0), ("--dpi", args.dpi, 1)):
        if value < low:
            raise ValueError(f"cam: {option} must be at least {low}, got {value}")
    if args.run:
        task = record_from_args(args, "cam", RUN_MODEL_FLAGS).get("task", "classification")
        if task != "classification":
            return _run_dense(args, task)
    model, names, title = _model(args)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    in_chans, *size = cfg.get("input_size", (3, 224, 224))
    size = args.input_size or size
    image, display = load_image(args.image, size, cfg.get("crop_pct", 1.0), cfg.get("mean"), cfg.get("std"),
                                in_chans)
    fig = explain_image(model, image, target=args.target, layer=args.layer, method=args.method,
                        class_names=names, topk=args.topk, box=args.box, max_maps=args.max_maps,
                        display=display, title=title)
    save_figure(fig, args.out, dpi=args.dpi)
    with torch.no_grad():
        probs = model.eval()(image[None]).softmax(1)[0]
    top = probs.topk(min(args.topk, probs.numel()))
    for p, k in zip(top.values.tolist(), top.indices.tolist()):
        print(f"{p:7.2%}  {names[k] if names else f'class {k}'}")
    print(f"wrote {args.out}")
    return 0


def _run_dense(args, record_task: str) -> int:
    """``cam --run DIR`` of a detection or segmentation run: the model's output and one Grad-CAM map."""
    import torch


    model, names, title = _model(args)
    if args.box or args.input_size:
        raise ValueError(f"cam: --box and --input-size are for classifiers; a {record_task} run reads the image "
                         f"at its trained size and draws its own boxes or classes")
    cfg = model_cfg(model)
    size = cfg["input_size"][1:]
    if record_task == "detection":
        if args.target is not None:
            raise ValueError("cam: --class is for segmentation and classification runs; choose a detection with "
                             "--detection K")
        image, display = load_image(args.image, size, 1.0, None, None)  # the detector normalises itself
        cam, detections = detection_cam(model, image, args.detection, layer=args.layer, method=args.method)
        fig = dense_figure(display, cam, detections=detections, chosen=args.detection,
                           score_thresh=args.score_thresh, class_names=names, title=title)
        for k, (box, score, label) in enumerate(zip(detections["boxes"].tolist(), detections["scores"].tolist(),
                                                    detections["labels"].tolist())):
            if score >= args.score_thresh or k == args.detection:
                print(f"{k:3d}  {score:.3f}  {names[label]:>12}  box {', '.join(f'{v:.1f}' for v in box)}"
                      + ("  (explained)" if k == args.detection else ""))
    else:
        if args.detection:
            raise ValueError("cam: --detection is for detection runs; choose a class with --class C")
        image, display = load_image(args.image, size, 1.0, cfg["mean"], cfg["std"])
        with torch.no_grad():
            prediction = model.eval()(image[None]).argmax(1)[0]                   # (H, W)
        target = args.target
        if target is None:
            counts = torch.bincount(prediction.flatten(), minlength=model.num_classes)
            counts[0] = 0
            target = int(counts.argmax()) if counts.any() else 0
        cam, _ = segmentation_cam(model, image[None], target, layer=args.layer, method=args.method)
        fig = dense_figure(display, cam[0], prediction=prediction, target=target, class_names=names, title=title)
        share = (prediction == target).float().mean().item()
        print(f"class {names[target]}: {share:.1%} of the pixels predicted")
    save_figure(fig, args.out, dpi=args.dpi)
    print(f"wrote {args.out}")
    return 0
