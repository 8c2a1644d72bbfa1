"""Detection and segmentation data: built-in cluttered-digit canvases and readers of COCO, VOC and
image/mask folders.

Detection items are ``(image, target)``: a ``tv_tensors.Image`` (3, H, W) float in [0, 1] (the
detector normalises it) and ``{"boxes": BoundingBoxes (N, 4) XYXY in pixels, "labels": (N,) int64
in 1…K, "masks": Mask (N, H, W) uint8, "iscrowd": (N,) int64, "image_id": int}`` — torchvision's
detection contract. Segmentation items are ``(image, mask)``: the image normalised by ``mean``/``std``
and a ``(H, W)`` int64 map of classes, ``ignore_index`` where the class is unknown.

Specs (:func:`create_dense_dataset`):

- ``cluttered-digits-det``: 64×64 canvases of 1–4 real digits (16–28 px, non-overlapping) among
  distractor strokes cut from other digits (the ``cluttered-digits`` recipe); labels 1…10 (digit + 1),
  boxes tight around each digit's ink, instance masks = its ink (value ≥ 0.5 where it is on top);
- ``cluttered-digits-seg``: the same canvases, per-pixel class 0 = background (clutter included),
  digit + 1 on the digits' ink, 255 (ignored) on their anti-aliased rims (0.05 < ink < 0.5);
- ``coco:PATH``: ``PATH/annotations/instances_{split}.json`` and ``PATH/{split}/`` images, read with
  ``pycocotools`` (polygons and RLE masks); category ids map to labels 1…K in id order;
- ``voc:PATH``: a ``VOCdevkit/VOC20XX`` folder: ``ImageSets/Main/{split}.txt``, ``Annotations/*.xml``,
  ``JPEGImages/*.jpg``; the 20 VOC classes as labels 1…20, ``difficult`` objects as ``iscrowd`` (ignored
  by the metrics);
- ``segfolder:PATH``: ``PATH/images/{split}/NAME.{jpg,png}`` with ``PATH/masks/{split}/NAME.png``
  (ADE20K/VOC layout), ``num_classes`` and ``ignore_index`` given.

The files of ``coco``, ``voc`` and ``segfolder`` can be checked before training (``check_item``, :mod:`.check`):
image headers, sizes against the annotations, and masks (their classes in range).

The built-in canvases are drawn afresh for each (seed, epoch, index) of the train split and fixed
for val; transforms that move boxes and masks with the image (``transforms.v2`` with ``tv_tensors``)
are seeded the same way, so nothing depends on workers, ranks or resumption.
"""
from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from .check import image_header, image_problem, keep_indices, read_mask
from .cluttered import CANVAS, _resize
from .digits import SPLITS, digits_8x8, split_indices
from .transforms import _mix

IGNORE_INDEX = 255
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
DENSE_BUILTIN = ("cluttered-digits-det", "cluttered-digits-seg")
DENSE_WITH_PATH = ("coco", "voc", "segfolder")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@contextlib.contextmanager
def _seeded(*values: int):
    """Run with the global CPU generator seeded by ``values`` (v2 transforms draw from it), then restore it."""
    state = torch.default_generator.get_state()
    torch.default_generator.manual_seed(_mix(*values))
    try:
        yield
    finally:
        torch.default_generator.set_state(state)


class _EpochSeeded(Dataset):
    """``set_epoch(e)``: what sample ``i`` draws (canvas or transform) is seeded by ``(seed, e, i)``."""

    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"{name}: split must be one of {SPLITS}, got {split!r}")


# ----------------------------------------------------------------------------------------- canvases
def draw_canvas(g: torch.Generator, images: torch.Tensor, labels: torch.Tensor, pool: torch.Tensor, *,
                max_digits: int = 4, clutter: int = 8, tries: int = 20):
    """One canvas: ``(canvas (64, 64) in [0, 1], digit layers (n, 64, 64), digits (n,))``.

    Up to ``max_digits`` digits of ``pool`` (indices into the 8×8 ``images``/``labels``), each resized to 16–28 px
    and placed where it overlaps no other (a placement is redrawn up to ``tries`` times, so a crowded
    canvas may hold fewer), over ``clutter`` random 4×4 crops of pool digits resized to 8–12 px.
    """
    canvas = torch.zeros(CANVAS, CANVAS)
    for _ in range(clutter):
        src = pool[torch.randint(len(pool), (), generator=g)]
        r, c = torch.randint(0, 5, (2,), generator=g).tolist()
        s = int(torch.randint(8, 13, (), generator=g))
        y, x = torch.randint(0, CANVAS - s + 1, (2,), generator=g).tolist()
        patch = _resize(images[src][None, r:r + 4, c:c + 4], s)[0]
        canvas[y:y + s, x:x + s] = torch.maximum(canvas[y:y + s, x:x + s], patch)
    wanted = int(torch.randint(1, max_digits + 1, (), generator=g))
    taken: list[tuple[int, int, int, int]] = []
    layers: list[torch.Tensor] = []
    digits: list[int] = []
    for _ in range(wanted):
        src = pool[torch.randint(len(pool), (), generator=g)]
        for _ in range(tries):
            s = int(torch.randint(16, 29, (), generator=g))
            y, x = torch.randint(0, CANVAS - s + 1, (2,), generator=g).tolist()
            if all(x + s <= x0 or x1 <= x or y + s <= y0 or y1 <= y for x0, y0, x1, y1 in taken):
                break
        else:
            continue
        taken.append((x, y, x + s, y + s))
        layer = torch.zeros(CANVAS, CANVAS)
        layer[y:y + s, x:x + s] = _resize(images[src][None], s)[0]
        layers.append(layer)
        digits.append(int(labels[src]))
    stacked = torch.stack(layers)
    return torch.maximum(canvas, stacked.amax(0)), stacked, torch.tensor(digits, dtype=torch.int64)


def masks_to_boxes_exclusive(masks: torch.Tensor) -> torch.Tensor:
    """Tight ``(x0, y0, x1, y1)`` of each non-empty (N, H, W) mask, end-exclusive pixels, as float."""
    from torchvision.ops import masks_to_boxes
    return masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])


class ClutteredDigitsDense(_EpochSeeded):
    """``cluttered-digits-det`` (``task="detection"``) or ``cluttered-digits-seg`` (``task="segmentation"``).

    Args:
        split: "train" (training digits, a fresh canvas per epoch) or "val" (validation digits, fixed canvases).
        length: canvases per epoch (default 2,000 for train, 200 for val).
        max_digits, clutter: digits (1…max_digits) and distractor fragments per canvas.
        seed: generation seed.
    """

    in_chans = 3
    image_size = CANVAS
    classes = ("background",) + tuple(str(d) for d in range(10))
    num_classes = 11  # the background and ten digits (torchvision's detector convention, and the seg classes)
    ignore_index = IGNORE_INDEX
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, split: str = "train", task: str = "detection", *, length: int | None = None,
                 max_digits: int = 4, clutter: int = 8, seed: int = 0):
        name = "cluttered-digits-det" if task == "detection" else "cluttered-digits-seg"
        _check_split(name, split)
        if task not in ("detection", "segmentation"):
            raise ValueError(f"cluttered-digits: task must be 'detection' or 'segmentation', got {task!r}")
        length = (2000 if split == "train" else 200) if length is None else length
        for arg, value, low in (("length", length, 1), ("max_digits", max_digits, 1), ("clutter", clutter, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: {arg} must be an integer >= {low}, got {value!r}")
        self.split, self.task, self.length = split, task, length
        self.max_digits, self.clutter, self.seed, self.epoch = max_digits, clutter, seed, 0
        self.pool = split_indices(split)
        self.digit_images, self.digit_labels = digits_8x8()[:2]

    def __len__(self) -> int:
        return self.length

    def sample(self, i: int):
        """``(canvas, layers, digits)`` of item ``i`` this epoch (val canvases ignore the epoch)."""
        epoch = self.epoch if self.split == "train" else 0
        g = torch.Generator().manual_seed(_mix(self.seed, epoch, i, self.split == "val"))
        return draw_canvas(g, self.digit_images, self.digit_labels, self.pool, max_digits=self.max_digits,
                           clutter=self.clutter)

    def __getitem__(self, i: int):
        if not 0 <= i < self.length:
            raise IndexError(f"cluttered-digits: index {i} out of range for {self.length} canvases")
        canvas, layers, digits = self.sample(i)
        on_top = layers >= layers.amax(0, keepdim=True)
        if self.task == "segmentation":
            image = ((canvas.expand(3, -1, -1) - torch.tensor(self.mean)[:, None, None])
                     / torch.tensor(self.std)[:, None, None])
            target = torch.zeros(CANVAS, CANVAS, dtype=torch.int64)
            rim = ((layers > 0.05) & (layers < 0.5) & on_top).any(0)
            target[rim] = IGNORE_INDEX
            for layer, top, d in zip(layers, on_top, digits.tolist()):
                target[(layer >= 0.5) & top] = d + 1
            return image, target
        masks = ((layers >= 0.5) & on_top).to(torch.uint8)
        keep = masks.flatten(1).bool().any(1)  # a digit without confident ink has no instance to find
        masks, digits = masks[keep], digits[keep]
        image = tv_tensors.Image(canvas.expand(3, -1, -1).clone())
        return image, dict(boxes=tv_tensors.BoundingBoxes(masks_to_boxes_exclusive(masks), format="XYXY",
                                                          canvas_size=(CANVAS, CANVAS)),
                           labels=digits + 1, masks=tv_tensors.Mask(masks),
                           iscrowd=torch.zeros(len(digits), dtype=torch.int64), image_id=i)


# ----------------------------------------------------------------------------------------- files
def _read_png_or_jpeg(path: Path, mode: str | None) -> np.ndarray:
    """The pixels of ``path`` (converted to ``mode``; ``None`` keeps palette indices, as VOC/ADE20K masks need)."""
    from PIL import Image

    if not path.is_file():
        raise ValueError(f"dense data: missing image file {path}")
    try:
        with Image.open(path) as img:
            return np.array(img.convert(mode) if mode else img)
    except OSError as e:
        raise ValueError(f"dense data: cannot read image {path} ({e})") from None


def _read_rgb(path: Path) -> torch.Tensor:
    return torch.from_numpy(_read_png_or_jpeg(path, "RGB")).permute(2, 0, 1).contiguous()  # (3, H, W) uint8


def _detection_target(boxes, labels, masks, iscrowd, image_id: int, size) -> dict:
    return dict(boxes=tv_tensors.BoundingBoxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                               format="XYXY", canvas_size=tuple(size)),
                labels=torch.as_tensor(labels, dtype=torch.int64), masks=masks,
                iscrowd=torch.as_tensor(iscrowd, dtype=torch.int64), image_id=image_id)


def _check_box(path, what: str, box, width: int, height: int) -> None:
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"{path}: {what} has box (x0, y0, x1, y1) = {tuple(box)} outside the {width}×{height} "
                         f"image or empty")


def _xml_text(xml_path: Path, element: ET.Element, path: str) -> str:
    """The text at ``path`` below ``element`` of the annotation file ``xml_path``; a ValueError naming it if absent."""
    text = element.findtext(path)
    if text is None:
        raise ValueError(f"{xml_path}: missing <{path}>")
    return text


class CocoDetection(_EpochSeeded):
    """COCO instances (``annotations/instances_{split}.json`` + ``{split}/`` images): boxes, labels, masks."""

    in_chans = 3

    def __init__(self, root, split: str = "train", *, transform=None, seed: int = 0):
        from pycocotools.coco import COCO

        _check_split("coco", split)
        self.root = Path(root)
        self.ann_file = self.root / "annotations" / f"instances_{split}.json"
        if not self.ann_file.is_file():
            raise ValueError(f"coco: missing annotation file {self.ann_file}")
        with contextlib.redirect_stdout(None):
            self.coco = COCO(str(self.ann_file))
        cat_ids = sorted(self.coco.getCatIds())
        self.label_of = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.classes = ("background",) + tuple(self.coco.cats[c]["name"] for c in cat_ids)
        self.num_classes = len(self.classes)
        self.ids = sorted(self.coco.getImgIds())
        for img_id in self.ids:
            info = self.coco.imgs[img_id]
            path = self.root / split / info["file_name"]
            if not path.is_file():
                raise ValueError(f"{self.ann_file}: image {img_id} names a missing file {path}")
            for ann in self.coco.imgToAnns[img_id]:
                if ann["category_id"] not in self.label_of:
                    raise ValueError(f"{self.ann_file}: annotation {ann['id']} has unknown category id "
                                     f"{ann['category_id']} (known: {cat_ids})")
                x, y, w, h = ann["bbox"]
                _check_box(self.ann_file, f"annotation {ann['id']}", (x, y, x + w, y + h),
                           info["width"], info["height"])
        self.split, self.transform, self.seed, self.epoch = split, transform, seed, 0

    def __len__(self) -> int:
        return len(self.ids)

    def check_item(self, i: int) -> tuple[str, str] | None:
        """``(path, why)`` when image ``i`` cannot be read or is not the size its annotation gives, else None."""
        info = self.coco.imgs[self.ids[i]]
        path = self.root / self.split / info["file_name"]
        problem = image_problem(path, (info["height"], info["width"]))
        return None if problem is None else (str(path), problem)

    def drop_items(self, indices) -> None:
        self.ids = [self.ids[i] for i in keep_indices(len(self.ids), indices)]

    def __getitem__(self, i: int):
        img_id = self.ids[i]
        info = self.coco.imgs[img_id]
        image = tv_tensors.Image(_read_rgb(self.root / self.split / info["file_name"]))
        anns = self.coco.imgToAnns[img_id]
        masks = []
        for ann in anns:
            m = torch.from_numpy(self.coco.annToMask(ann))
            if "segmentation" in ann and not m.any():
                raise ValueError(f"{self.ann_file}: annotation {ann['id']} has an empty mask")
            masks.append(m)
        height, width = image.shape[-2:]
        masks = tv_tensors.Mask(torch.stack(masks) if masks else torch.zeros(0, height, width, dtype=torch.uint8))
        boxes = [(a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]) for a in anns]
        target = _detection_target(boxes, [self.label_of[a["category_id"]] for a in anns], masks,
                                   [a.get("iscrowd", 0) for a in anns], img_id, (height, width))
        return _apply(self, i, image, target)


class VOCDetection(_EpochSeeded):
    """PASCAL VOC detection: ``ImageSets/Main/{split}.txt``, ``Annotations/*.xml``, ``JPEGImages/*.jpg``."""

    in_chans = 3
    classes = ("background",) + VOC_CLASSES
    num_classes = len(classes)

    def __init__(self, root, split: str = "train", *, transform=None, seed: int = 0):
        _check_split("voc", split)
        self.root = Path(root)
        listing = self.root / "ImageSets" / "Main" / f"{split}.txt"
        if not listing.is_file():
            raise ValueError(f"voc: missing image list {listing}")
        self.items = []
        for stem in listing.read_text().split():
            xml_path = self.root / "Annotations" / f"{stem}.xml"
            if not xml_path.is_file():
                raise ValueError(f"voc: {listing} lists {stem!r} but {xml_path} is missing")
            self.items.append(self._parse(xml_path))
        self.transform, self.seed, self.epoch = transform, seed, 0

    def _parse(self, xml_path: Path) -> dict:
        root = ET.parse(xml_path).getroot()
        width, height = int(_xml_text(xml_path, root, "size/width")), int(_xml_text(xml_path, root, "size/height"))
        boxes, labels, difficult = [], [], []
        for obj in root.iter("object"):
            name = obj.findtext("name", "").strip()
            if name not in VOC_CLASSES:
                raise ValueError(f"{xml_path}: unknown class {name!r} (VOC classes: {', '.join(VOC_CLASSES)})")
            xmin, ymin, xmax, ymax = (float(_xml_text(xml_path, obj, f"bndbox/{k}"))
                                      for k in ("xmin", "ymin", "xmax", "ymax"))
            # VOC corners are 1-based and inclusive: (xmin - 1, ymin - 1, xmax, ymax) in pixels
            box = (xmin - 1, ymin - 1, xmax, ymax)
            _check_box(xml_path, f"object {name!r}", box, width, height)
            boxes.append(box)
            labels.append(VOC_CLASSES.index(name) + 1)
            difficult.append(int(obj.findtext("difficult", "0")))
        image = self.root / "JPEGImages" / root.findtext("filename", f"{xml_path.stem}.jpg")
        if not image.is_file():
            raise ValueError(f"{xml_path}: names a missing image file {image}")
        return dict(image=image, boxes=boxes, labels=labels, difficult=difficult, size=(height, width))

    def __len__(self) -> int:
        return len(self.items)

    def check_item(self, i: int) -> tuple[str, str] | None:
        """``(path, why)`` when image ``i`` cannot be read or is not the size its annotation gives, else None."""
        item = self.items[i]
        problem = image_problem(item["image"], item["size"])
        return None if problem is None else (str(item["image"]), problem)

    def drop_items(self, indices) -> None:
        self.items = [self.items[i] for i in keep_indices(len(self.items), indices)]

    def __getitem__(self, i: int):
        item = self.items[i]
        image = tv_tensors.Image(_read_rgb(item["image"]))
        if tuple(image.shape[-2:]) != item["size"]:
            raise ValueError(f"voc: {item['image']} is {tuple(image.shape[-2:])} "
                             f"but its annotation says {item['size']}")
        masks = tv_tensors.Mask(torch.zeros(0, *item["size"], dtype=torch.uint8))
        target = _detection_target(item["boxes"], item["labels"], masks, item["difficult"], i, item["size"])
        del target["masks"]
        return _apply(self, i, image, target)


class SegFolder(_EpochSeeded):
    """``images/{split}/NAME.{jpg,png}`` with ``masks/{split}/NAME.png`` class maps."""

    in_chans = 3

    def __init__(self, root, split: str = "train", *, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 transform=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, seed: int = 0):
        _check_split("segfolder", split)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"segfolder: num_classes must be a positive integer, got {num_classes!r}")
        self.root = Path(root)
        image_dir, mask_dir = self.root / "images" / split, self.root / "masks" / split
        if not image_dir.is_dir():
            raise ValueError(f"segfolder: missing image folder {image_dir}")
        self.items = []
        for path in sorted(image_dir.iterdir()):
            if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
                continue
            mask = mask_dir / f"{path.stem}.png"
            if not mask.is_file():
                raise ValueError(f"segfolder: image {path} has no mask file {mask}")
            self.items.append((path, mask))
        if not self.items:
            raise ValueError(f"segfolder: no .jpg/.png images in {image_dir}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.classes = tuple(str(c) for c in range(num_classes))
        self.transform, self.mean, self.std, self.seed, self.epoch = transform, mean, std, seed, 0

    def __len__(self) -> int:
        return len(self.items)

    def _mask_problem(self, mask: torch.Tensor, image_size) -> str | None:
        if mask.ndim != 2:
            return f"must be one channel of class indices, got shape {tuple(mask.shape)}"
        if tuple(mask.shape) != tuple(image_size):
            return f"is {tuple(mask.shape)}, its image {tuple(image_size)}"
        bad = (mask >= self.num_classes) & (mask != self.ignore_index)
        if bad.any():
            return (f"has class values {sorted(mask[bad].unique().tolist())[:10]} outside 0…{self.num_classes - 1} "
                    f"and not the ignore index {self.ignore_index}")
        return None

    def check_item(self, i: int) -> tuple[str, str] | None:
        """``(path, why)`` when image ``i`` cannot be read, or its mask is unreadable, of another size or holds
        classes outside ``0…num_classes-1`` but the ignore index; else None. Masks are read whole."""
        path, mask_path = self.items[i]
        size, problem = image_header(path)
        if problem is not None:
            return str(path), problem
        pixels, problem = read_mask(mask_path)
        if problem is None:
            assert pixels is not None  # read without a problem
            problem = self._mask_problem(torch.from_numpy(pixels.astype(np.int64)), size)
        return None if problem is None else (str(mask_path), problem)

    def drop_items(self, indices) -> None:
        self.items = [self.items[i] for i in keep_indices(len(self.items), indices)]

    def __getitem__(self, i: int):
        path, mask_path = self.items[i]
        image = tv_tensors.Image(_read_rgb(path))
        mask = torch.from_numpy(_read_png_or_jpeg(mask_path, None).astype(np.int64))
        problem = self._mask_problem(mask, image.shape[-2:])
        if problem is not None:
            raise ValueError(f"segfolder: mask {mask_path} {problem}")
        image, mask = _apply(self, i, image, tv_tensors.Mask(mask))
        image = v2.functional.normalize(v2.functional.to_dtype(image, torch.float32, scale=True), self.mean, self.std)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


def _apply(ds, i: int, image, target):
    """``ds.transform(image, target)`` seeded by (seed, epoch, index); images leave as float in [0, 1]
    for detection (the detector normalises), untouched dtype for segmentation (normalised after)."""
    if ds.transform is not None:
        with _seeded(ds.seed, ds.epoch, i):
            image, target = ds.transform(image, target)
    if isinstance(target, dict):
        image = v2.functional.to_dtype(image, torch.float32, scale=True)
    return image, target


def train_transform() -> v2.Compose:
    """Horizontal flips that move boxes and masks with the image (the digit canvases are never flipped:
    a mirrored digit is another glyph; they get fresh canvases instead)."""
    return v2.Compose([v2.RandomHorizontalFlip()])


def create_dense_dataset(name: str, arg: str | None, split: str = "train", *, augment: bool | None = None,
                         seed: int = 0, num_classes: int | None = None, ignore_index: int = IGNORE_INDEX, **kwargs):
    """The ``split`` of a detection/segmentation spec (see the module docstring)."""
    augment = split == "train" if augment is None else augment
    if name in DENSE_BUILTIN:
        task = "detection" if name.endswith("-det") else "segmentation"
        return ClutteredDigitsDense(split, task, seed=seed, **kwargs)  # fresh canvases are the augmentation
    if name == "segfolder":
        if num_classes is None:
            raise ValueError("data: 'segfolder' needs num_classes (--num-classes)")
        return SegFolder(arg, split, num_classes=num_classes, ignore_index=ignore_index,
                         transform=train_transform() if augment else None, seed=seed, **kwargs)
    cls = {"coco": CocoDetection, "voc": VOCDetection}[name]
    return cls(arg, split, transform=train_transform() if augment else None, seed=seed, **kwargs)


def detection_collate(batch):
    """``[(image, target), ...]`` → ``(list of images, list of targets)``: detectors take lists of any sizes."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def segmentation_collate(batch, ignore_index: int = IGNORE_INDEX):
    """Stack ``(image, mask)`` pairs, padding right/bottom to the largest (images with 0, masks with
    ``ignore_index``, so padding never counts)."""
    height = max(img.shape[-2] for img, _ in batch)
    width = max(img.shape[-1] for img, _ in batch)
    images = torch.stack([F.pad(img, (0, width - img.shape[-1], 0, height - img.shape[-2])) for img, _ in batch])
    masks = torch.stack([F.pad(m, (0, width - m.shape[-1], 0, height - m.shape[-2]), value=ignore_index)
                         for _, m in batch])
    return images, masks
