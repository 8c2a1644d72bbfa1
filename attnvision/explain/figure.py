"""One labelled figure of where a network looks (needs matplotlib: the ``plot`` extra).

Top row: the input, the Grad-CAM overlay for the explained class, the top predicted classes
with their probabilities, and the channel attention weights per layer (when the model has
channel gates). Rows below: the spatial attention maps in network order, each over the image,
named by layer.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch import nn

from ..io import atomic_write
from .attention import attention_maps
from .gradcam import gradcam, resolve_layer
from .metrics import energy_in_box, pointing_game

COLUMNS = 4
PANEL_W, PANEL_H = 3.4, 3.2   # inches per panel
SPATIAL = ("spatial", "map", "tokens", "local")


def _import_matplotlib():
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle
        from matplotlib.ticker import MaxNLocator, PercentFormatter
    except ImportError as e:
        raise ImportError("attnvision.explain.figure needs matplotlib: pip install 'attnvision[plot]'") from e
    return Figure, Rectangle, MaxNLocator, PercentFormatter


def figure_size(num_spatial_maps: int, max_maps: int = 8) -> tuple[float, float]:
    """Figure size in inches for a model with ``num_spatial_maps`` spatial maps (at most ``max_maps`` shown)."""
    rows = 1 + math.ceil(min(num_spatial_maps, max_maps) / COLUMNS)
    return COLUMNS * PANEL_W, rows * PANEL_H


def _short(name: str, width: int = 30) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _split_common_suffix(names: list[str]) -> tuple[list[str], str]:
    """Names without their longest common dotted suffix (kept whole when it would empty one), and that suffix."""
    parts = [n.split(".") for n in names]
    k = 0
    while all(len(p) > k + 1 for p in parts) and len({p[-1 - k] for p in parts}) == 1:
        k += 1
    suffix = "." + ".".join(parts[0][len(parts[0]) - k:]) if k else ""
    return [".".join(p[:len(p) - k]) for p in parts], suffix


def _display_image(image: torch.Tensor, mean, std) -> np.ndarray:
    """(C, H, W) normalised tensor → (H, W, 3) in [0, 1] for display."""
    x = image.detach().float().cpu()
    if mean is not None and std is not None and len(mean) == x.shape[0] == len(std):
        x = x * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    else:
        x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
    x = x.clamp(0, 1)
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x[:3]
    return x.permute(1, 2, 0).numpy()


def explain_image(model: nn.Module, image: torch.Tensor, *, target: int | None = None, layer="auto",
                  method: str = "gradcam", class_names=None, topk: int = 5, box=None, max_maps: int = 8,
                  query=None, head: int | None = None, display=None, title: str | None = None):
    """Grad-CAM, predictions and attention maps of one image as a matplotlib Figure.

    Args:
        model: the classifier. image: (C, H, W), normalised as the model expects.
        target: the class to explain (default: the top prediction).
        layer, method: as in :func:`attnvision.explain.gradcam`.
        class_names: names of the classes (default "class K").
        topk: how many predictions to list.
        box: optional object box (x0, y0, x1, y1) in input pixels, end-exclusive: drawn, and the
            CAM's energy inside it and the pointing-game result are printed in the title.
        max_maps: at most this many spatial attention maps are drawn, evenly spread through the
            network (the title says how many there are).
        query, head: which query and head to draw for token attention (see ``AttentionMap.spatial``).
        display: (H, W, 3) array in [0, 1] to draw instead of the de-normalised input.
        title: the figure's title (default: the model's class name).
    """
    Figure, Rectangle, MaxNLocator, PercentFormatter = _import_matplotlib()
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"explain_image: expected one image (C, H, W), got {got}")
    batch = image[None]
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    shown = display if display is not None else _display_image(image, cfg.get("mean"), cfg.get("std"))
    height, width = image.shape[-2:]

    cam, logits = gradcam(model, batch, target=target, layer=layer, method=method, return_logits=True)
    probs = logits.float().softmax(1)[0].cpu()
    cls = int(logits.argmax(1)) if target is None else int(target)
    maps = attention_maps(model, batch)
    names = list(class_names) if class_names is not None else [f"class {k}" for k in range(probs.numel())]
    if len(names) != probs.numel():
        raise ValueError(f"explain_image: {len(names)} class names for a model with {probs.numel()} classes")

    spatial = [m for m in maps.values() if m.layout in SPATIAL]
    channel = [m for m in maps.values() if m.layout == "channel"]
    picks = sorted({round(i) for i in np.linspace(0, len(spatial) - 1, min(len(spatial), max_maps))}) \
        if spatial else []
    fig = Figure(figsize=figure_size(len(spatial), max_maps), layout="constrained")
    map_rows = math.ceil(len(picks) / COLUMNS)
    # two sub-figures, so that the top row's labels and colour bar do not shift the maps' columns
    upper, lower = fig.subfigures(2, 1, height_ratios=[1, max(map_rows, 1e-3)]) if map_rows else (fig, None)
    top_grid = upper.add_gridspec(1, COLUMNS)

    def draw_box(ax):
        if box is not None:
            x0, y0, x1, y1 = (float(v) for v in box)
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.5, ec="lime"))

    ax = upper.add_subplot(top_grid[0, 0])
    ax.imshow(shown)
    draw_box(ax)
    ax.set_title(f"input {height}×{width}", fontsize=9)
    ax.axis("off")

    ax = upper.add_subplot(top_grid[0, 1])
    ax.imshow(shown.mean(2), cmap="gray")
    im = ax.imshow(cam[0].cpu().numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    draw_box(ax)
    layer_name, _ = resolve_layer(model, layer)
    label = f"{'Grad-CAM++' if method == 'gradcam++' else 'Grad-CAM'} for {_short(names[cls], 22)} " \
            f"(p={probs[cls]:.1%})\nlayer {_short(layer_name, 24)}"
    if box is not None:
        label += (f"\nenergy in box {float(energy_in_box(cam[0], box)):.2f}, "
                  f"pointing {'hit' if bool(pointing_game(cam[0], box)) else 'miss'}")
    ax.set_title(label, fontsize=9)
    ax.axis("off")
    upper.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)

    ax = upper.add_subplot(top_grid[0, 2])
    k = min(topk, probs.numel())
    best = probs.topk(k)
    ax.barh(range(k)[::-1], best.values.numpy(), color=["tab:red" if int(i) == cls else "tab:blue"
                                                          for i in best.indices])
    ax.set_yticks(range(k)[::-1], [_short(names[int(i)], 18) for i in best.indices], fontsize=8)
    for row, p in zip(range(k)[::-1], best.values.tolist()):
        ax.text(p, row, f" {p:.1%}", va="center", fontsize=8)
    ax.set_xlim(0, max(1e-6, float(best.values[0])) * 1.4)
    ax.xaxis.set_major_locator(MaxNLocator(3))
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    ax.set_xlabel("probability", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(f"top-{k} predictions", fontsize=9)

    ax = upper.add_subplot(top_grid[0, 3])
    if channel:
        labels, suffix = _split_common_suffix([m.name for m in channel])
        ax.boxplot([m.channel_weights()[0].float().cpu().numpy() for m in channel], showfliers=False)
        ax.set_xticks(range(1, len(channel) + 1), [_short(n, 14) for n in labels], rotation=90, fontsize=6)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(f"channel weights of {len(channel)} layers\n(*{_short(suffix, 20)}; box: quartiles "
                     f"over channels)", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no channel attention", ha="center", va="center", fontsize=9, color="gray")
        ax.axis("off")

    map_grid = lower.add_gridspec(map_rows, COLUMNS) if lower is not None else None
    for slot, index in enumerate(picks):
        assert lower is not None and map_grid is not None  # maps picked: there are map rows
        m = spatial[index]
        ax = lower.add_subplot(map_grid[slot // COLUMNS, slot % COLUMNS])
        values = m.spatial(query, head)[0].float().cpu().numpy()
        ax.imshow(shown.mean(2), cmap="gray", extent=(0, width, height, 0))
        ax.imshow(values, cmap="viridis", alpha=0.6, extent=(0, width, height, 0), interpolation="nearest")
        what = {"spatial": "spatial map", "map": "3-D map, channel mean"}.get(m.layout)
        if what is None:   # one query's weights: say which, and mark it
            _, row, col = m.resolve_query(query)
            qh, qw, _ = m.query_grid()
            what = f"query {'class token' if row is None else (row, col)}, " \
                   f"{'mean of heads' if head is None else f'head {head}'},"
            if row is not None:
                ax.plot((col + 0.5) * width / qw, (row + 0.5) * height / qh, "r+", ms=10, mew=2)
        ax.set_title(f"{_short(m.name)}\n{what} {values.shape[0]}×{values.shape[1]}, "
                     f"range {values.min():.3g}–{values.max():.3g}", fontsize=8)
        ax.axis("off")

    heading = title or type(model).__name__
    if spatial:
        heading += f" — attention maps: {len(picks)} of {len(spatial)} shown"
    fig.suptitle(heading, fontsize=11)
    return fig


def save_figure(fig, path, dpi: int = 100) -> None:
    """Write ``fig`` to ``path`` atomically; the format follows the suffix (PNG when there is none)."""
    suffix = os.path.splitext(os.fspath(path))[1][1:].lower() or "png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=suffix, dpi=dpi))


def dense_figure(display: np.ndarray, cam: torch.Tensor, *, detections: dict | None = None, chosen: int | None = None,
                 score_thresh: float = 0.5, prediction: torch.Tensor | None = None, target: int | None = None,
                 class_names=None, title: str = ""):
    """Where a detector or segmenter looks, in two panels: its output over the image (the detections
    scoring at least ``score_thresh``, and ``chosen`` in red whatever its score, the title saying which;
    or the predicted class map), and the Grad-CAM map of the explained detection (its box drawn) or
    class (the outline of its predicted pixels)."""
    Figure, Rectangle, _, _ = _import_matplotlib()
    height, width = display.shape[:2]
    fig = Figure(figsize=(2 * PANEL_W, PANEL_H + 0.4), constrained_layout=True)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)

    def name(k: int) -> str:
        return class_names[k] if class_names is not None and k < len(class_names) else f"class {k}"

    for ax in (left, right):
        ax.imshow(display, extent=(0, width, height, 0))
        ax.axis("off")
    right.imshow(cam.detach().float().cpu().numpy(), cmap="jet", alpha=0.5, extent=(0, width, height, 0))
    if detections is not None:
        for k, (box, score, label) in enumerate(zip(detections["boxes"].tolist(), detections["scores"].tolist(),
                                                    detections["labels"].tolist())):
            if score < score_thresh and k != chosen:
                continue
            x0, y0, x1, y1 = box
            color = "red" if k == chosen else "lime"
            for ax in (left, right) if k == chosen else (left,):
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.5))
            left.text(x0, y0, f"{name(label)} {score:.2f}", color=color, fontsize=7, va="bottom")
        left.set_title(detections_title(detections["scores"].tolist(), chosen, score_thresh), fontsize=9)
        if chosen is not None:
            box_label = detections["labels"][chosen].item()
            right.set_title(f"Grad-CAM of detection {chosen}: {name(box_label)} "
                            f"{detections['scores'][chosen].item():.2f}" + _empty_note(cam), fontsize=9)
    else:
        assert prediction is not None and target is not None  # a segmenter's figure: its prediction and class
        classes = prediction.cpu().numpy()
        left.imshow(np.ma.masked_equal(classes, 0), cmap="tab20", alpha=0.6, vmin=0, vmax=19,
                    extent=(0, width, height, 0), interpolation="nearest")
        present = sorted(set(classes.ravel().tolist()) - {0})
        left.set_title("predicted classes: " + (", ".join(name(k) for k in present[:6]) or "background only"),
                       fontsize=9)
        region = (classes == target).astype(float)
        if 0 < region.sum() < region.size:  # pixel centres, in the images' (top-down) coordinates
            right.contour(np.arange(width) + 0.5, np.arange(height) + 0.5, region, levels=[0.5], colors="white",
                          linewidths=1)
        right.set_title(f"Grad-CAM of {name(target)} (its predicted pixels outlined)" + _empty_note(cam), fontsize=9)
    fig.suptitle(title, fontsize=11)
    return fig


def detections_title(scores: list[float], chosen: int | None, score_thresh: float) -> str:
    """What the detections panel shows: how many detections pass ``score_thresh`` and which one is
    explained, with its score when it is below the threshold (drawn all the same)."""
    above = sum(score >= score_thresh for score in scores)
    count = f"{above} detection{'' if above == 1 else 's'} with score ≥ {score_thresh:g}"
    if chosen is None:
        return count
    if scores[chosen] >= score_thresh:
        return f"{count}; red: detection {chosen}, explained"
    return (f"explained in red: detection {chosen}, score {scores[chosen]:.2f}, below {score_thresh:g} "
            f"({'none' if above == 0 else above} above)")


def _empty_note(cam: torch.Tensor) -> str:
    """Said under a map that is zero everywhere: the ReLU of eq. 2 found no positive evidence in the layer."""
    return "\n(zero everywhere: no positive evidence in this layer)" if not cam.any() else ""
