"""``digits``: the 1,797 real 8×8 handwritten digits bundled with scikit-learn, upsampled to 32×32.

The images are the UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin and
Kaynak, 1998), ink counts 0..16 on an 8×8 grid, shipped here as ``assets/digits.npz`` (written
by ``tools/make_digits_asset.py``), so nothing is downloaded and scikit-learn is not needed.

Split: a fixed permutation (seed 0) puts 1,437 images in ``train`` and 360 in ``val``.
Pixels are scaled to [0, 1], bilinearly upsampled to 32×32 and normalised by the training
split's mean and standard deviation. One channel, ten classes.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

ASSET = os.path.join(os.path.dirname(__file__), "assets", "digits.npz")
NUM_TRAIN = 1437
SPLITS = ("train", "val")


@functools.lru_cache(maxsize=1)
def digits_8x8() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All 1,797 digits as ``(images (N, 8, 8) float in [0, 1], labels (N,), permutation (N,))``."""
    with np.load(ASSET) as f:
        images = torch.from_numpy(f["images"].astype(np.float32) / 16.0)
        labels = torch.from_numpy(f["labels"].astype(np.int64))
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    return images, labels, perm


def split_indices(split: str) -> torch.Tensor:
    if split not in SPLITS:
        raise ValueError(f"digits: split must be one of {SPLITS}, got {split!r}")
    perm = digits_8x8()[2]
    return perm[:NUM_TRAIN] if split == "train" else perm[NUM_TRAIN:]


class Digits(Dataset):
    """The digits at ``image_size``×``image_size`` (default 32), one channel; items are ``(image, label)``."""

    num_classes = 10
    in_chans = 1
    classes = tuple(str(d) for d in range(10))

    def __init__(self, split: str = "train", *, image_size: int = 32):
        if not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"digits: image_size must be an integer >= 8, got {image_size!r}")
        images, labels, _ = digits_8x8()
        idx = split_indices(split)
        big = F.interpolate(images[:, None], size=(image_size, image_size), mode="bilinear",
                            align_corners=False).clamp_(0, 1)          # (N, 1, S, S)
        train = big[split_indices("train")]
        self.mean, self.std = (train.mean().item(),), (train.std().item(),)
        self.images = (big[idx] - self.mean[0]) / self.std[0]
        self.labels = labels[idx]
        self.split, self.image_size = split, image_size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])
