"""Datasets read from disk: ``imagefolder:PATH`` and ``cifar10:PATH`` / ``cifar100:PATH``.

Nothing is downloaded. Errors name the path and what was expected there: a missing folder,
a class folder without images, an unreadable image (by file name) or the wrong archive. An image folder's
files can be checked before training (``check_item``, :mod:`.check`).
"""
from __future__ import annotations

import os

from torch.utils.data import Dataset

from .check import image_problem, keep_indices

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _read_rgb(path: str):
    from PIL import Image

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except Exception as e:  # PIL raises many types; all mean the same thing to the user
        raise ValueError(f"imagefolder: cannot read image {path!r} ({type(e).__name__}: {e})") from None


class ImageFolder(Dataset):
    """torchvision's ``ImageFolder`` layout: ``PATH/{train,val}/CLASS/*.jpg``; items are ``(PIL image, label)``.

    The class list is the sorted names of the folders under ``PATH/train``; ``PATH/val`` must
    hold the same classes.
    """

    mean = std = None
    in_chans = 3
    image_size: int | None = None

    def __init__(self, root: str, split: str = "train"):
        from torchvision.datasets import DatasetFolder

        if split not in ("train", "val"):
            raise ValueError(f"imagefolder: split must be 'train' or 'val', got {split!r}")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"imagefolder: no folder at {root!r}")
        folder = os.path.join(root, split)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"imagefolder: expected {root!r} to hold 'train' and 'val' folders of class "
                                    f"folders (ImageFolder layout); {folder!r} does not exist")
        classes = sorted(e.name for e in os.scandir(os.path.join(root, "train")) if e.is_dir())
        if not classes:
            raise ValueError(f"imagefolder: {os.path.join(root, 'train')!r} holds no class folders")
        here = sorted(e.name for e in os.scandir(folder) if e.is_dir())
        if here != classes:
            missing, extra = sorted(set(classes) - set(here)), sorted(set(here) - set(classes))
            raise ValueError(f"imagefolder: the class folders of {folder!r} differ from those of train "
                             f"(missing {missing}, extra {extra})")
        for c in classes:
            d = os.path.join(folder, c)
            if not any(f.lower().endswith(IMAGE_EXTENSIONS) for f in os.listdir(d)):
                raise ValueError(f"imagefolder: class folder {d!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        self._data = DatasetFolder(folder, loader=_read_rgb, extensions=IMAGE_EXTENSIONS)
        self.classes = tuple(classes)
        self.num_classes = len(classes)
        self.split = split

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, i: int):
        return self._data[i]

    def check_item(self, i: int) -> tuple[str, str] | None:
        """``(path, why)`` when image ``i`` cannot be read (:mod:`.check`), else None."""
        path = self._data.samples[i][0]
        problem = image_problem(path)
        return None if problem is None else (path, problem)

    def drop_items(self, indices) -> None:
        """Leave the images ``indices`` out (their class folders stay classes)."""
        samples = self._data.samples
        self._data.samples = [samples[i] for i in keep_indices(len(samples), indices)]
        self._data.targets = [label for _, label in self._data.samples]


_CIFAR = {"cifar10": ("CIFAR10", "cifar-10-batches-py", 10), "cifar100": ("CIFAR100", "cifar-100-python", 100)}


class CIFAR(Dataset):
    """CIFAR-10/100 from the python-pickle archive already extracted under ``root``; items are ``(PIL image, label)``.

    ``root`` is the folder holding ``cifar-10-batches-py`` (or ``cifar-100-python``), or that
    folder itself. Files are checked against their published checksums.
    """

    mean = std = None
    in_chans = 3
    image_size = 32

    def __init__(self, name: str, root: str, split: str = "train"):
        import torchvision.datasets as tvd

        if name not in _CIFAR:
            raise ValueError(f"cifar: name must be one of {sorted(_CIFAR)}, got {name!r}")
        if split not in ("train", "val"):
            raise ValueError(f"{name}: split must be 'train' or 'val', got {split!r}")
        cls_name, folder, num_classes = _CIFAR[name]
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{name}: no folder at {root!r}")
        if os.path.basename(os.path.normpath(root)) == folder:
            root = os.path.dirname(os.path.normpath(root))
        if not os.path.isdir(os.path.join(root, folder)):
            raise FileNotFoundError(f"{name}: expected the extracted python archive {folder!r} in {root!r}")
        try:
            self._data = getattr(tvd, cls_name)(root, train=split == "train", download=False)
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
            raise ValueError(f"{name}: {os.path.join(root, folder)!r} is not the {cls_name} python archive "
                             f"(its files are missing or fail their checksums: {e})") from None
        self.classes = tuple(self._data.classes)
        self.num_classes = num_classes
        self.split = split

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, i: int):
        return self._data[i]
