"""Numbers for "where does the network look": energy in the object's box and the pointing game.

    energy_in_box(L, b) = Σ_{(i,j) ∈ b} L_ij / Σ_{(i,j)} L_ij      (the energy-based pointing game,
                                                                  Wang et al., Score-CAM, 2020)
    pointing_game(L, b) = [argmax_ij L_ij ∈ b]                   (Zhang et al., 2016)

A box is (x0, y0, x1, y1) in pixels, end-exclusive: columns x0 … x1−1 and rows y0 … y1−1.
Both are unchanged by scaling the map, so raw and normalised CAMs give the same numbers.
"""
from __future__ import annotations

from collections.abc import Sized
from typing import cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .gradcam import gradcam


def _check_cam(who: str, cam) -> torch.Tensor:
    if not isinstance(cam, torch.Tensor):
        raise TypeError(f"{who}: expected the map as a tensor (H, W) or (B, H, W), got {type(cam).__name__}")
    if cam.dim() not in (2, 3):
        raise ValueError(f"{who}: expected the map as (H, W) or (B, H, W), got shape {tuple(cam.shape)}")
    if cam.dtype.is_floating_point and bool((cam < 0).any()):
        raise ValueError(f"{who}: the map has negative values (min {cam.min().item():.3g}); expected a "
                         f"non-negative map such as a Grad-CAM")
    return cam if cam.dim() == 3 else cam[None]


def _box_mask(who: str, box, batch: int, height: int, width: int) -> torch.Tensor:
    """(B, H, W) boolean mask of the boxes, after checking they lie inside the map."""
    boxes = torch.as_tensor(box)
    if boxes.dtype.is_floating_point:
        if not bool((boxes == boxes.round()).all()):
            raise ValueError(f"{who}: box coordinates must be whole pixels, got {boxes.tolist()}")
        boxes = boxes.long()
    if boxes.dim() == 1:
        boxes = boxes[None].expand(batch, -1)
    if boxes.shape != (batch, 4):
        raise ValueError(f"{who}: expected a box (x0, y0, x1, y1) or {batch} boxes (B, 4), got shape "
                         f"{tuple(boxes.shape)}")
    x0, y0, x1, y1 = boxes.unbind(1)
    bad = (x0 < 0) | (y0 < 0) | (x1 > width) | (y1 > height) | (x0 >= x1) | (y0 >= y1)
    if bool(bad.any()):
        raise ValueError(f"{who}: boxes must satisfy 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height} "
                         f"(end-exclusive pixels of the {height}×{width} map), got "
                         f"{boxes[bad].tolist()}")
    cols = torch.arange(width)[None, None, :]
    rows = torch.arange(height)[None, :, None]
    x0, y0, x1, y1 = (t.cpu()[:, None, None] for t in (x0, y0, x1, y1))
    return (cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1)                # (B, H, W)


def energy_in_box(cam: torch.Tensor, box) -> torch.Tensor:
    """Fraction of the map's mass inside the box, per map: (B,) for (B, H, W), a scalar for (H, W).

    1.0 for a map that is zero outside the box; the box's share of the area for a uniform map;
    0.0 for an all-zero map (it points nowhere).
    """
    single = cam.dim() == 2 if isinstance(cam, torch.Tensor) else False
    maps = _check_cam("energy_in_box", cam).double()
    mask = _box_mask("energy_in_box", box, *maps.shape).to(maps.device)
    total = maps.sum((1, 2))
    inside = (maps * mask).sum((1, 2))
    energy = torch.where(total > 0, inside / torch.where(total > 0, total, torch.ones_like(total)),
                         torch.zeros_like(total))
    return energy[0] if single else energy


def pointing_game(cam: torch.Tensor, box) -> torch.Tensor:
    """Whether the map's maximum lies in the box, per map (bool; (B,) or a scalar).

    With several maximal pixels, a hit needs all of them inside, so a flat map hits only when
    the box covers the whole image.
    """
    single = cam.dim() == 2 if isinstance(cam, torch.Tensor) else False
    maps = _check_cam("pointing_game", cam)
    mask = _box_mask("pointing_game", box, *maps.shape).to(maps.device)
    peaks = maps == maps.amax((1, 2), keepdim=True)
    hits = ~(peaks & ~mask).any(2).any(1)
    return hits[0] if single else hits


class _WithBoxes(Dataset):
    """(image, label) samples of ``base`` with ``base.boxes[i]`` appended."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(cast(Sized, self.base))  # a map-style dataset: it has a length

    def __getitem__(self, i):
        image, label = self.base[i]
        return image, label, torch.as_tensor(getattr(self.base, "boxes")[i])


def explanation_scores(model: nn.Module, data, *, layer="auto", method: str = "gradcam", target: str = "label",
                       batch_size: int = 64, device=None, max_samples: int | None = None) -> dict:
    """Mean energy in the box and pointing-game hit rate of Grad-CAM over a dataset.

    Args:
        model: the classifier (its train/eval state is restored).
        data: a Dataset of ``(image, label, box)`` samples, or of ``(image, label)`` samples with
            the boxes in its ``boxes`` attribute (N, 4) (as ``cluttered-digits``), or an iterable of
            batches ``(images (B, C, H, W), labels (B,), boxes (B, 4))``, e.g. a DataLoader.
        layer, method: as in :func:`gradcam`.
        target: "label" explains the true class, "pred" the predicted one.
        batch_size: batch size when ``data`` is a Dataset.
        device: where to run (default: the model's device).
        max_samples: stop after this many samples.

    Returns ``{"energy_in_box": mean, "pointing_game": hit rate, "samples": n}``.
    """
    if target not in ("label", "pred"):
        raise ValueError(f"explanation_scores: target must be 'label' or 'pred', got {target!r}")
    if isinstance(data, Dataset):
        if hasattr(data, "boxes") and len(cast(Sized, data)) and len(data[0]) == 2:
            data = _WithBoxes(data)
        data = DataLoader(data, batch_size=batch_size, shuffle=False)
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    energy_sum, hits, n = 0.0, 0, 0
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) != 3:
            got = f"a {type(batch).__name__}" + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else "")
            raise ValueError(f"explanation_scores: expected batches of (images, labels, boxes), got {got}")
        images, labels, boxes = batch
        if isinstance(boxes, (list, tuple)) and all(isinstance(b, torch.Tensor) and b.dim() == 1 for b in boxes):
            boxes = torch.stack(list(boxes), 1)  # a DataLoader collates (x0, y0, x1, y1) tuples into 4 columns
        boxes = torch.as_tensor(boxes)
        if max_samples is not None:
            keep = max_samples - n
            if keep <= 0:
                break
            images, labels, boxes = images[:keep], labels[:keep], boxes[:keep]
        images = images.to(device)
        cams = gradcam(model, images, target=labels.to(device) if target == "label" else None,
                       layer=layer, method=method)
        energy_sum += float(energy_in_box(cams, boxes).sum())
        hits += int(pointing_game(cams, boxes).sum())
        n += images.shape[0]
    if n == 0:
        raise ValueError("explanation_scores: the data gave no samples")
    return {"energy_in_box": energy_sum / n, "pointing_game": hits / n, "samples": n}
