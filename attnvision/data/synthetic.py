"""``synthetic[:CxHxW]``: random images with random labels, for speed tests (default 3×32×32, 10 classes)."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset


class Synthetic(Dataset):
    """``size`` standard-normal images of shape ``image_shape`` with uniform labels, fixed by ``seed``."""

    mean = std = None

    def __init__(self, split: str = "train", *, image_shape=(3, 32, 32), num_classes: int = 10,
                 size: int | None = None, seed: int = 0):
        if split not in ("train", "val"):
            raise ValueError(f"synthetic: split must be 'train' or 'val', got {split!r}")
        if len(image_shape) != 3 or not all(isinstance(s, int) and s > 0 for s in image_shape):
            raise ValueError(f"synthetic: image shape must be three positive integers C×H×W, got {image_shape!r}")
        size = size if size is not None else (512 if split == "train" else 128)
        g = torch.Generator().manual_seed(seed * 2 + (split == "val"))
        self.images = torch.randn(size, *image_shape, generator=g)
        self.labels = torch.randint(num_classes, (size,), generator=g)
        self.num_classes, self.in_chans, self.image_size = num_classes, image_shape[0], image_shape[1]
        self.classes = tuple(str(c) for c in range(num_classes))
        self.split = split

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])
