"""Training and evaluation transforms, and per-sample seeded augmentation.

Recipes (the papers' standard ones):

- ImageNet-like data (``imagefolder``): train ``RandomResizedCrop(size) + horizontal flip``,
  eval ``Resize(size / crop_pct) + CenterCrop(size)``;
- 32×32 data (``cifar10``/``cifar100``): train ``4-pixel pad + random 32×32 crop + flip``;
- ``digits``: ``2-pixel pad + random crop`` (no flip: a mirrored digit is another glyph);
- ``cluttered-digits`` and ``synthetic``: none (the digit's box must stay where it is).

On request, :class:`.augment.SampleAugment` adds RandAugment, TrivialAugment, AugMix, colour
jitter and random erasing to any of these training recipes (see :mod:`.augment`).

Mean/std and input size come from the model's ``pretrained_cfg`` for image files, and from
the dataset itself for the built-in one-channel datasets.

:class:`Augmented` draws every random number of sample ``i`` in epoch ``e`` from a
generator seeded by ``(seed, e, i)``, so augmentation does not depend on worker processes,
ranks or where a run was resumed.
"""
from __future__ import annotations

import math
from collections.abc import Sized
from typing import cast

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .augment import SampleAugment


def to_tensor(mean, std) -> v2.Compose:
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


INTERPOLATIONS = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC,
                  "nearest": v2.InterpolationMode.NEAREST}


def imagenet_transform(size: int, mean, std, *, train: bool, crop_pct: float = 0.875,
                       augment: SampleAugment | None = None, interpolation: str = "bilinear") -> v2.Compose:
    """``augment`` (train only): its policy and jitter after the flip, its erasing after the normalisation;
    ``interpolation`` (a ``pretrained_cfg``'s: "bilinear", "bicubic" or "nearest") resizes."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"data: interpolation must be one of {tuple(INTERPOLATIONS)}, got {interpolation!r}")
    mode = INTERPOLATIONS[interpolation]
    if train:
        return v2.Compose([v2.RandomResizedCrop(size, interpolation=mode, antialias=True), v2.RandomHorizontalFlip(),
                           *_image_steps(augment), to_tensor(mean, std), *_tensor_steps(augment)])
    return v2.Compose([v2.Resize(int(math.floor(size / crop_pct)), interpolation=mode, antialias=True),
                       v2.CenterCrop(size), to_tensor(mean, std)])


def pad_crop_transform(size: int, mean, std, *, train: bool, padding: int = 4, flip: bool = True,
                       augment: SampleAugment | None = None) -> v2.Compose:
    """``augment`` (train only): as in :func:`imagenet_transform`."""
    if not train:
        return v2.Compose([to_tensor(mean, std)])
    flips = [v2.RandomHorizontalFlip()] if flip else []
    return v2.Compose([v2.RandomCrop(size, padding=padding), *flips, *_image_steps(augment), to_tensor(mean, std),
                       *_tensor_steps(augment)])


def _image_steps(augment: SampleAugment | None) -> list:
    return augment.image_steps() if augment else []


def _tensor_steps(augment: SampleAugment | None) -> list:
    return augment.tensor_steps() if augment else []


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (SplitMix64 steps), so nearby tuples give unrelated seeds."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class Augmented(Dataset):
    """``base`` with ``transform`` applied to each image, seeded per (seed, epoch, index).

    Attributes of ``base`` (``num_classes``, ``classes``, ``boxes``, ...) are reachable here.
    """

    def __init__(self, base: Dataset, transform=None, *, seed: int = 0):
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):  # data drawn afresh every epoch (cluttered-digits' training canvases)
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(cast(Sized, self.base))  # a map-style dataset: it has a length

    def __getattr__(self, name):
        if name == "base":  # not yet set (unpickling): avoid recursing
            raise AttributeError(name)
        return getattr(self.base, name)

    def __getitem__(self, i: int):
        image, label = self.base[i]
        if self.transform is not None:
            # transforms draw from the global CPU generator: seed it for this sample, then put it back
            g = torch.default_generator
            outer = g.get_state()
            g.manual_seed(_mix(self.seed, self.epoch, i))
            try:
                image = self.transform(image)
            finally:
                g.set_state(outer)
        return image, label
