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

from dataclasses import dataclass
from typing import Any, Callable

from torchvision.transforms import v2

from .._suggest import unknown_name_error
from ..registry import Registry
from .augment import AUTO_AUGMENTS, BatchMix, InUnitRange, SampleAugment, mixup_cutmix
from .check import BadFile, find_bad_files
from .cluttered import ClutteredDigits
from .dense import DENSE_BUILTIN, DENSE_WITH_PATH, IMAGENET_MEAN, IMAGENET_STD, create_dense_dataset
from .digits import Digits
from .files import CIFAR, ImageFolder
from .synthetic import Synthetic
from .transforms import Augmented, imagenet_transform, pad_crop_transform

__all__ = ["AUTO_AUGMENTS", "Augmented", "BadFile", "BatchMix", "CIFAR", "ClutteredDigits", "DATASETS", "DataSource",
           "Digits", "ImageFolder", "SampleAugment", "Synthetic", "create_dataset", "data_task", "find_bad_files",
           "mixup_cutmix", "parse_spec", "register_dataset", "spec_names"]


@dataclass(frozen=True)
class DataSource:
    """A registered data spec: ``build(arg, split, **options) -> dataset`` (``options``: ``input_size``,
    ``mean``, ``std``, ``crop_pct``, ``augment``, ``seed``, ``sample_augment`` and, for detection and
    segmentation data, their own keywords), the task its items are for, and what follows its name:
    ``path=True`` for ``NAME:PATH`` (required), ``argument=True`` for an optional ``NAME[:ARG]``; ``recipe``:
    the training settings ``attnvision train`` uses on these data unless told otherwise."""

    build: Callable[..., Any]
    task: str = "classification"
    path: bool = False
    argument: bool = False
    recipe: dict | None = None  # TrainConfig settings that train well on these data (train's defaults for them)


DATASETS: Registry[DataSource] = Registry("dataset")


def register_dataset(name: str, build: Callable[..., Any], *, task: str = "classification", path: bool = False,
                     argument: bool = False, recipe: dict | None = None, override: bool = False) -> None:
    """Make ``create_dataset("NAME[:ARG]", split, ...)`` (and ``train --data``) build ``build(arg, split, ...)``."""
    DATASETS.register(name, DataSource(build, task, path, argument, recipe), override=override,
                      who="register_dataset")


# The small built-in data train well with AdamW, a short warm-up and label smoothing at batch 64 (the default
# comparison's recipe: ResNet-20 reaches 95% on digits in 2 epochs, where SGD at 0.1 and batch 128 gets 44%)
SMALL_DATA_RECIPE = dict(batch_size=64, lr=4e-3, opt="adamw", sched="cosine", warmup_epochs=0.5, label_smoothing=0.1)


def spec_names(task: str | None = None) -> list[str]:
    """The data specs (``NAME`` or ``NAME:PATH``) registered for ``task`` (all when None)."""
    return [f"{n}:PATH" if DATASETS[n].path else n for n in DATASETS.names()
            if task is None or DATASETS[n].task == task]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"cifar10:/data"`` → ``("cifar10", "/data")``; ``"digits"`` → ``("digits", None)``."""
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"data: the spec must be a non-empty string, got {spec!r}")
    name, sep, arg = spec.partition(":")
    if name not in DATASETS:
        raise unknown_name_error("data", name, spec_names())
    source = DATASETS[name]
    if source.path and not arg:
        raise ValueError(f"data: {name!r} needs a path, as in '{name}:PATH'")
    if not (source.path or source.argument) and sep:
        raise ValueError(f"data: {name!r} takes no argument, got {spec!r}")
    return name, arg or None


def data_task(spec: str) -> str:
    """The task whose items ``spec`` gives: "classification", "detection" or "segmentation"."""
    return DATASETS[parse_spec(spec)[0]].task


def create_dataset(spec: str, split: str = "train", *, input_size=None, mean=None, std=None,
                   crop_pct: float = 0.875, augment: bool | None = None, seed: int = 0,
                   sample_augment: SampleAugment | None = None, interpolation: str = "bilinear", **dense_kwargs):
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
        interpolation: how image files are resized ("bilinear", "bicubic"; the model's ``pretrained_cfg``).
        **dense_kwargs: for detection/segmentation specs (``num_classes``, ``ignore_index`` of ``segfolder``,
            ...): see :func:`.dense.create_dense_dataset`.
    """
    name, arg = parse_spec(spec)
    source = DATASETS[name]
    if sample_augment is not None and not isinstance(sample_augment, SampleAugment):
        raise TypeError(f"data: sample_augment must be a SampleAugment, got {type(sample_augment).__name__}")
    if source.task != "classification":
        if sample_augment:
            raise ValueError(f"data: sample_augment is for classification data; {name!r} is {source.task} data")
        return source.build(arg, split, augment=augment, seed=seed, **dense_kwargs)
    if dense_kwargs:
        raise ValueError(f"data: {sorted(dense_kwargs)} are for detection/segmentation data, not {name!r}")
    augment = split == "train" if augment is None else augment
    if sample_augment and not augment:
        raise ValueError(f"data: sample_augment is training augmentation, but the {split!r} split of {name!r} is "
                         f"built without augmentation (augment=True turns it on)")
    return source.build(arg, split, input_size=input_size, mean=mean or IMAGENET_MEAN, std=std or IMAGENET_STD,
                        crop_pct=crop_pct, augment=augment, seed=seed, sample_augment=sample_augment or None,
                        interpolation=interpolation)


def _digits(arg, split, *, augment, seed, sample_augment, **_):
    base = Digits(split)
    background = -base.mean[0] / base.std[0]  # images are normalised already; pad with blank paper
    crop = v2.RandomCrop(base.image_size, padding=2, fill=background) if augment else None
    return Augmented(base, _on_normalised(base, crop, sample_augment), seed=seed)


def _cluttered_digits(arg, split, *, seed, sample_augment, **_):
    base = ClutteredDigits(split, seed=seed)
    return Augmented(base, _on_normalised(base, None, sample_augment), seed=seed)


def _synthetic(arg, split, *, seed, sample_augment, **_):
    shape: tuple[int, ...] = (3, 32, 32)
    if arg:
        try:
            shape = tuple(int(s) for s in arg.lower().split("x"))
        except ValueError:
            shape = ()
        if len(shape) != 3:
            raise ValueError(f"data: synthetic takes a shape like 'synthetic:3x32x32', got 'synthetic:{arg}'")
    if sample_augment and sample_augment.image_steps():
        raise ValueError("data: auto_augment and color_jitter work on images in [0, 1]; synthetic images are "
                         "standard-normal noise of no such range (random_erase alone applies)")
    transform = v2.Compose(sample_augment.tensor_steps()) if sample_augment else None
    return Augmented(Synthetic(split, image_shape=shape), transform, seed=seed)


def _image_folder(arg, split, *, input_size, mean, std, crop_pct, augment, seed, sample_augment, interpolation):
    base = ImageFolder(arg, split)
    size = int((input_size or (3, 224, 224))[-1])
    base.image_size = size
    transform = imagenet_transform(size, mean, std, train=augment, crop_pct=crop_pct, augment=sample_augment,
                                   interpolation=interpolation)
    return Augmented(base, transform, seed=seed)


def _cifar(name: str):
    def build(arg, split, *, mean, std, augment, seed, sample_augment, **_):
        base = CIFAR(name, arg, split)
        return Augmented(base, pad_crop_transform(32, mean, std, train=augment, augment=sample_augment), seed=seed)
    return build


def _dense(name: str):
    def build(arg, split, **kwargs):
        return create_dense_dataset(name, arg, split, **kwargs)
    return build


register_dataset("digits", _digits, recipe=SMALL_DATA_RECIPE)
register_dataset("cluttered-digits", _cluttered_digits, recipe=SMALL_DATA_RECIPE)
register_dataset("synthetic", _synthetic, argument=True)
register_dataset("imagefolder", _image_folder, path=True)
register_dataset("cifar10", _cifar("cifar10"), path=True)
register_dataset("cifar100", _cifar("cifar100"), path=True)
for _name in DENSE_BUILTIN + DENSE_WITH_PATH:
    register_dataset(_name, _dense(_name), task="detection" if _name in ("cluttered-digits-det", "coco", "voc")
                     else "segmentation", path=_name in DENSE_WITH_PATH)


def _on_normalised(base, crop, sample_augment: SampleAugment | None):
    """``crop`` then ``sample_augment`` for a dataset of normalised tensors (its ``mean`` and ``std``): the policy
    and jitter in the [0, 1] range (:class:`.augment.InUnitRange`), the erasing on the normalised tensor."""
    if sample_augment is None:
        return crop
    image_steps = sample_augment.image_steps()
    return v2.Compose([*([crop] if crop is not None else []),
                       *([InUnitRange(image_steps, base.mean, base.std)] if image_steps else []),
                       *sample_augment.tensor_steps()])
