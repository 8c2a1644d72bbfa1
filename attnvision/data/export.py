"""Images of a dataset written as PNG files, for the commands that read image files (``cam --image``,
``imagefolder:PATH``): ``attnvision data export cluttered-digits --split val --count 8 --out DIR``.

Each image is un-normalised with the dataset's own mean and standard deviation (the built-in data are
stored normalised) and written as an 8-bit PNG, ``DIR/<index>_<class>.png``; ``DIR/labels.csv`` lists
file, label, class name and, for data with object boxes, the box. With ``imagefolder=True`` the files
go to ``DIR/<split>/<class>/<index>.png``, the layout that ``imagefolder:DIR`` reads.
"""
from __future__ import annotations

import csv
import io
import os

import numpy as np
import torch
from PIL import Image

from ..io import atomic_write_bytes, atomic_write_text
from . import create_dataset, data_task


def _to_uint8(image: torch.Tensor, mean, std) -> np.ndarray:
    """(C, H, W) normalised → (H, W) or (H, W, 3) uint8."""
    c = image.shape[0]
    mean = torch.tensor(mean if len(mean) == c else [sum(mean) / len(mean)] * c)[:, None, None]
    std = torch.tensor(std if len(std) == c else [sum(std) / len(std)] * c)[:, None, None]
    pixels = (image * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
    return pixels[0].numpy() if c == 1 else pixels.permute(1, 2, 0).numpy()


def export_images(spec: str, out: str, *, split: str = "val", count: int = 8, start: int = 0,
                  imagefolder: bool = False) -> list[str]:
    """Write ``count`` images of ``spec``'s ``split`` from index ``start`` as PNG files into ``out``; returns
    the paths written."""
    if data_task(spec) != "classification":
        raise ValueError(f"data export: {spec!r} is {data_task(spec)} data; export takes classification data "
                         f"(its items are an image and a label)")
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"data export: count must be a positive integer, got {count!r}")
    data = create_dataset(spec, split, augment=False)
    if start < 0 or start + count > len(data):
        raise ValueError(f"data export: images {start}..{start + count - 1} asked for, but the {split} split of "
                         f"{spec!r} has {len(data)}")
    mean, std = getattr(data, "mean", None), getattr(data, "std", None)
    if mean is None or std is None:
        raise ValueError(f"data export: {spec!r} does not say how its images were normalised (no mean/std)")
    classes = list(getattr(data, "classes", None) or [str(i) for i in range(data.num_classes)])
    boxes = getattr(data, "boxes", None)
    rows, written = [], []
    for i in range(start, start + count):
        image, label = data[i]
        name = classes[int(label)]
        path = (os.path.join(out, split, name, f"{i:05d}.png") if imagefolder
                else os.path.join(out, f"{i:05d}_{name}.png"))
        buffer = io.BytesIO()
        Image.fromarray(_to_uint8(image, mean, std)).save(buffer, format="PNG")
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
        rows.append([os.path.relpath(path, out), int(label), name,
                     *(" ".join(str(int(v)) for v in boxes[i]) for _ in [0] if boxes is not None)])
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file", "label", "class", *(["box_x0_y0_x1_y1"] if boxes is not None else [])])
    writer.writerows(rows)
    atomic_write_text(os.path.join(out, "labels.csv"), text.getvalue())
    return written
