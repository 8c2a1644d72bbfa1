"""``cluttered-digits``: one real digit at a random place and scale on a 64×64 canvas full of clutter.

In the spirit of cluttered MNIST (Mnih et al., Recurrent Models of Visual Attention, NIPS
2014): the class is decided by one object in a small region, and distractor strokes cut
from other digits cover the rest of the canvas, so a network gains from looking in the
right place. Generated deterministically from :mod:`attnvision.data.digits`:

- ``train``: fresh canvases every epoch (:meth:`ClutteredDigits.set_epoch`), drawn from the
  1,437 training digits (digit and clutter alike) by a generator seeded by the run's seed and
  the epoch, so a resumed run sees the same canvases as an uninterrupted one; a network cannot
  memorise a fixed set of canvases, only learn to find and read the digit;
- ``val``: one fixed set of 2,160 canvases (6 per digit) drawn from the 360 held-out digits
  only, the same for every seed.

Each canvas is made as follows:

- each source digit (8×8) is resized to s×s, s uniform in [16, 32], and placed uniformly
  on the canvas;
- ``clutter`` fragments (default 8), each a random 4×4 crop of another digit of the same
  split resized to 8–12 pixels, are scattered uniformly; the canvas is the pixel-wise
  maximum of the fragments and the digit.

Each sample keeps its digit's box ``(x0, y0, x1, y1)`` in canvas pixels, end-exclusive (the
digit covers ``canvas[y0:y1, x0:x1]``), tight around the digit's ink: ``dataset.boxes`` is a
``(N, 4)`` int64 tensor and ``dataset.box(i)`` a tuple. Explanation metrics (how much of a
saliency map falls in the box) read them.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .digits import SPLITS, digits_8x8, split_indices
from .transforms import _mix

CANVAS = 64
TRAIN_COPIES, VAL_COPIES = 3, 6
VAL_SEED = 0


def _paste_max(canvases: torch.Tensor, patches: torch.Tensor, canvas_ids: torch.Tensor, sizes: torch.Tensor,
               pos: torch.Tensor) -> None:
    """``canvas[y:y+s, x:x+s] = max(canvas[...], resize(patch, s))`` for every patch, batched by size."""
    n, height, width = canvases.shape
    flat = canvases.view(-1)
    for s in sizes.unique().tolist():
        sel = (sizes == s).nonzero()[:, 0]
        big = _resize(patches[sel], s)
        offsets = torch.arange(s)
        rows = pos[sel, 0, None] + offsets                                  # (M, s)
        cols = pos[sel, 1, None] + offsets
        index = canvas_ids[sel, None, None] * (height * width) + rows[:, :, None] * width + cols[:, None, :]
        flat.scatter_reduce_(0, index.reshape(-1), big.reshape(-1), reduce="amax")


def _ink_boxes(digits: torch.Tensor, sizes: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Tight ``(x0, y0, x1, y1)`` of each resized digit's ink, end-exclusive, in canvas pixels."""
    boxes = torch.zeros(len(digits), 4, dtype=torch.int64)
    for s in sizes.unique().tolist():
        sel = (sizes == s).nonzero()[:, 0]
        big = _resize(digits[sel], s)
        row_ink, col_ink = (big.amax(2) > 0).int(), (big.amax(1) > 0).int()   # (M, s) each
        y, x = pos[sel, 0], pos[sel, 1]
        boxes[sel] = torch.stack([x + col_ink.argmax(1), y + row_ink.argmax(1),
                                  x + s - col_ink.flip(1).argmax(1), y + s - row_ink.flip(1).argmax(1)], 1)
    return boxes


def _resize(patches: torch.Tensor, size: int) -> torch.Tensor:
    """(M, h, w) → (M, size, size), bilinear, clamped to [0, 1]."""
    return F.interpolate(patches[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0].clamp_(0, 1)


def render(digit_ids: torch.Tensor, clutter_pool: torch.Tensor, clutter: int, g: torch.Generator):
    """``(canvases (N, 64, 64) in [0, 1], labels (N,), boxes (N, 4))``: digit ``digit_ids[k]`` on canvas k,
    with ``clutter`` fragments cut from digits of ``clutter_pool``, every random number drawn from ``g``."""
    images, labels_all, _ = digits_8x8()
    n = len(digit_ids)
    frag_src = clutter_pool[torch.randint(len(clutter_pool), (n, clutter), generator=g)]
    frag_rc = torch.randint(0, 5, (n, clutter, 2), generator=g)
    frag_size = torch.randint(CANVAS // 8, CANVAS * 3 // 16 + 1, (n, clutter), generator=g)
    frag_pos = (torch.rand(n, clutter, 2, generator=g) * (CANVAS - frag_size + 1)[..., None]).long()
    size = torch.randint(CANVAS // 4, CANVAS // 2 + 1, (n,), generator=g)
    pos = (torch.rand(n, 2, generator=g) * (CANVAS - size + 1)[:, None]).long()

    crops = images.unfold(1, 4, 1).unfold(2, 4, 1)                       # (N, 5, 5, 4, 4): crop by corner
    canvases = torch.zeros(n, CANVAS, CANVAS)
    frag_patches = crops[frag_src, frag_rc[..., 0], frag_rc[..., 1]].reshape(-1, 4, 4)
    frag_canvas = torch.arange(n).repeat_interleave(clutter)
    _paste_max(canvases, frag_patches, frag_canvas, frag_size.reshape(-1), frag_pos.reshape(-1, 2))
    _paste_max(canvases, images[digit_ids], torch.arange(n), size, pos)
    boxes = _ink_boxes(images[digit_ids], size, pos)
    return canvases, labels_all[digit_ids], boxes


def generate(split: str, copies: int, clutter: int, seed: int, epoch: int = 0):
    """The canvases of ``split`` for ``(seed, epoch)`` (see :func:`render`), cached.

    Every digit of the split appears ``copies`` times, in order (canvas i shows digit
    ``split_indices(split)[i % n]``); its place, scale and clutter are drawn from a generator
    seeded by ``(split, seed, epoch)``: for given ``copies`` and ``clutter``, canvas i is a function of
    those and i alone.
    """
    pool = split_indices(split)
    g = torch.Generator().manual_seed(_mix(SPLITS.index(split), seed, epoch))
    return render(pool.repeat(copies), pool, clutter, g)


_validation_set = functools.lru_cache(maxsize=2)(generate)


@functools.lru_cache(maxsize=2)
def _reference_stats(clutter: int) -> tuple[tuple[float], tuple[float]]:
    """Mean and std of epoch 0 of seed 0's training canvases: both splits, every seed and epoch are
    normalised by these."""
    canvases = generate("train", 1, clutter, 0)[0]
    return (canvases.mean().item(),), (canvases.std().item(),)


class ClutteredDigits(Dataset):
    """Cluttered digit canvases, one channel, ten classes; items are ``(image, label)``.

    The ``train`` split draws fresh canvases every epoch (:meth:`set_epoch`) from the 1,437
    training digits; the ``val`` split is one fixed set drawn from the 360 held-out digits
    (never seen in a training canvas, not even as clutter), the same for every ``seed``.

    Args:
        split: "train" or "val".
        copies: canvases made from each source digit per epoch (train) or in all (val), each at
            a new place and scale, with new clutter (default: 3 for train, 4,311 canvases an
            epoch; 6 for val, 2,160 canvases).
        clutter: distractor fragments per canvas.
        seed: the training canvases' seed (the run's seed); the validation set ignores it.
    """

    num_classes = 10
    in_chans = 1
    classes = tuple(str(d) for d in range(10))
    image_size = CANVAS

    def __init__(self, split: str = "train", *, copies: int | None = None, clutter: int = 8, seed: int = 0):
        copies = (TRAIN_COPIES if split == "train" else VAL_COPIES) if copies is None else copies
        if not isinstance(copies, int) or copies < 1:
            raise ValueError(f"cluttered-digits: copies must be a positive integer, got {copies!r}")
        if not isinstance(clutter, int) or clutter < 0:
            raise ValueError(f"cluttered-digits: clutter must be a non-negative integer, got {clutter!r}")
        if split not in SPLITS:
            raise ValueError(f"cluttered-digits: split must be one of {SPLITS}, got {split!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"cluttered-digits: seed must be a non-negative integer, got {seed!r}")
        self.split, self.copies, self.clutter = split, copies, clutter
        self.seed = seed if split == "train" else VAL_SEED
        self.mean, self.std = _reference_stats(clutter)
        self.epoch: int | None = None
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw the training canvases of ``epoch`` (the validation set stays as it is)."""
        epoch = epoch if self.split == "train" else 0
        if epoch == self.epoch:
            return
        make = generate if self.split == "train" else _validation_set
        canvases, labels, boxes = make(self.split, self.copies, self.clutter, self.seed, epoch)
        self.raw = canvases
        self.images = ((canvases - self.mean[0]) / self.std[0])[:, None]   # (N, 1, 64, 64)
        self.labels = labels
        self.boxes = boxes
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])

    def box(self, i: int) -> tuple[int, int, int, int]:
        """The digit's box ``(x0, y0, x1, y1)`` of sample ``i``, end-exclusive canvas pixels."""
        x0, y0, x1, y1 = (int(v) for v in self.boxes[i])
        return x0, y0, x1, y1
