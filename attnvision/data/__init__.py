"""Datasets by spec string: ``create_dataset("cluttered-digits", "train")``.

Specs:

- ``digits``: 1,797 real 8×8 handwritten digits, upsampled to 32×32, built in (:mod:`.digits`);
- ``cluttered-digits``: one digit on a cluttered 64×64 canvas, with its box (:mod:`.cluttered`);
- ``imagefolder:PATH``: ``PATH/train/CLASS/*.jpg`` and ``PATH/val/CLASS/*.jpg``;
- ``cifar10:PATH``, ``cifar100:PATH``: the python archives already extracted under ``PATH``;
- ``synthetic`` or ``synthetic:CxHxW``: random tensors, for speed tests;
- detection and segmentation (:mod:`.dense`): ``cluttered-digits-det``, ``cluttered-digits-seg``,
  ``coco:PATH``, ``voc:PATH``, ``segfolder:PATH`` — items are ``(image, target dict)`` or ``(image, mask)``.

Every dataset gives ``(image tensor, label)`` and has ``num_classes``, ``in_chans``,
``classes`` and ``set_epoch(epoch)`` (augmentation is seeded per sample and epoch). The datasets read
from files can check them all before a run (:func:`find_bad_files`, :mod:`.check`).
"""
from __future__ import annotations

from torchvision.transforms import v2

from .._suggest import unknown_name_error
from .check import BadFile, find_bad_files
from .cluttered import ClutteredDigits
from .digits import Digits
from .files import CIFAR, ImageFolder
from .synthetic import Synthetic
from .augment import AUTO_AUGMENTS, BatchMix, InUnitRange, SampleAugment, mixup_cutmix
from .transforms import Augmented, imagenet_transform, pad_crop_transform

from .dense import DENSE_BUILTIN, DENSE_WITH_PATH, create_dense_dataset

BUILTIN = ("digits", "cluttered-digits", "synthetic") + DENSE_BUILTIN
WITH_PATH = ("imagefolder", "cifar10", "cifar100") + DENSE_WITH_PATH

__all__ = ["AUTO_AUGMENTS", "Augmented", "BadFile", "BatchMix", "CIFAR", "ClutteredDigits", "Digits", "ImageFolder",
           "SampleAugment", "Synthetic", "create_dataset", "data_task", "find_bad_files", "mixup_cutmix", "parse_spec"]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"cifar10:/data"`` → ``("cifar10", "/data")``; ``"digits"`` → ``("digits", None)``."""
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"data: the spec must be a non-empty string, got {spec!r}")
    name, sep, arg = spec.partition(":")
    if name not in BUILTIN + WITH_PATH:
        raise unknown_name_error("data", name, [*BUILTIN, *(f"{n}:PATH" for n in WITH_PATH)])
    if name in WITH_PATH and not arg:
        raise ValueError(f"data: {name!r} needs a path, as in '{name}:PATH'")
    if name in ("digits", "cluttered-digits", *DENSE_BUILTIN) and sep:
        raise ValueError(f"data: {name!r} takes no argument, got {spec!r}")
    return name, arg or None


def data_task(spec: str) -> str:
    """The task whose items ``spec`` gives: "classification", "detection" or "segmentation"."""
    name, _ = parse_spec(spec)
    if name in ("cluttered-digits-det", "coco", "voc"):
        return "detection"
    if name in ("cluttered-digits-seg", "segfolder"):
        return "segmentation"
    return "classification"


def create_dataset(spec: str, split: str = "train", *, input_size=None, mean=None, std=None,
                   crop_pct: float = 0.875, augment: bool | None = None, seed: int = 0,
                   sample_augment: SampleAugment | None = None, **dense_kwargs):
    """The ``split`` ("train" or "val") of the dataset ``spec``, with its transforms.

    Args:
        input_size: (C, H, W) the model expects (its ``pretrained_cfg["input_size"]``); image files are
            cropped to it (CIFAR stays 32×32); the built-in datasets keep their own size.
        mean, std: normalisation for image files (the model's ``pretrained_cfg``); the built-in
            datasets are normalised by their own training statistics.
        augment: apply training augmentation (default: for the train split).
        seed: augmentation seed.
        sample_augment: RandAugment, TrivialAugment, AugMix, colour jitter, random erasing
            (:class:`.augment.SampleAugment`) added to the training augmentation (classification data;
            ``synthetic`` noise takes the erasing only).
        **dense_kwargs: for detection/segmentation specs (``num_classes``, ``ignore_index`` of ``segfolder``,
            ...): see :func:`.dense.create_dense_dataset`.
    """
    name, arg = parse_spec(spec)
    if sample_augment is not None and not isinstance(sample_augment, SampleAugment):
        raise TypeError(f"data: sample_augment must be a SampleAugment, got {type(sample_augment).__name__}")
    if sample_augment and name in DENSE_BUILTIN + DENSE_WITH_PATH:
        raise ValueError(f"data: sample_augment is for classification data; {name!r} is {data_task(spec)} data")
    if name in DENSE_BUILTIN + DENSE_WITH_PATH:
        return create_dense_dataset(name, arg, split, augment=augment, seed=seed, **dense_kwargs)
    if dense_kwargs:
        raise ValueError(f"data: {sorted(dense_kwargs)} are for detection/segmentation data, not {name!r}")
    augment = split == "train" if augment is None else augment
    if sample_augment and not augment:
        raise ValueError(f"data: sample_augment is training augmentation, but the {split!r} split of {name!r} is "
                         f"built without augmentation (augment=True turns it on)")
    sample_augment = sample_augment or None
    mean = mean or (0.485, 0.456, 0.406)
    std = std or (0.229, 0.224, 0.225)
    if name == "digits":
        base = Digits(split)
        background = -base.mean[0] / base.std[0]  # images are normalised already; pad with blank paper
        transform = v2.RandomCrop(base.image_size, padding=2, fill=background) if augment else None
        transform = _on_normalised(base, transform, sample_augment)
    elif name == "cluttered-digits":
        base = ClutteredDigits(split, seed=seed)
        transform = _on_normalised(base, None, sample_augment)
    elif name == "synthetic":
        shape = (3, 32, 32)
        if arg:
            try:
                shape = tuple(int(s) for s in arg.lower().split("x"))
            except ValueError:
                shape = ()
            if len(shape) != 3:
                raise ValueError(f"data: synthetic takes a shape like 'synthetic:3x32x32', got {spec!r}")
        if sample_augment and sample_augment.image_steps():
            raise ValueError("data: auto_augment and color_jitter work on images in [0, 1]; synthetic images are "
                             "standard-normal noise of no such range (random_erase alone applies)")
        base = Synthetic(split, image_shape=shape)
        transform = v2.Compose(sample_augment.tensor_steps()) if sample_augment else None
    elif name == "imagefolder":
        base = ImageFolder(arg, split)
        size = int((input_size or (3, 224, 224))[-1])
        base.image_size = size
        transform = imagenet_transform(size, mean, std, train=augment, crop_pct=crop_pct, augment=sample_augment)
    else:
        base = CIFAR(name, arg, split)
        transform = pad_crop_transform(32, mean, std, train=augment, augment=sample_augment)
    return Augmented(base, transform, seed=seed)


def _on_normalised(base, crop, sample_augment: SampleAugment | None):
    """``crop`` then ``sample_augment`` for a dataset of normalised tensors (its ``mean`` and ``std``): the policy
    and jitter in the [0, 1] range (:class:`.augment.InUnitRange`), the erasing on the normalised tensor."""
    if sample_augment is None:
        return crop
    image_steps = sample_augment.image_steps()
    return v2.Compose([*([crop] if crop is not None else []),
                       *([InUnitRange(image_steps, base.mean, base.std)] if image_steps else []),
                       *sample_augment.tensor_steps()])
