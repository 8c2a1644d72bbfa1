"""Every file of a dataset checked before a run reads it, so that a bad file stops nothing half-way.

A dataset read from files (``imagefolder``, ``coco``, ``voc``, ``segfolder``) offers ``check_item(i)``: why
item ``i`` cannot be used, as ``(path, reason)``, or None; and ``drop_items(indices)``, which leaves those items
out. Images are checked by their header (opened and verified; decoded only for a JPEG without its end marker),
and against the size their annotation gives; masks are read whole and their classes checked. :func:`find_bad_files`
runs the check over the items in threads (the work is reading files), with a progress bar for large sets.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

PROGRESS_FROM = 2000  # items: a smaller set is checked before a bar would be worth drawing


@dataclass(frozen=True)
class BadFile:
    """Item ``index`` of a dataset cannot be used: its file ``path``, and why."""

    index: int
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


def checks_files(dataset) -> bool:
    """Whether ``dataset`` is read from files it can check (``check_item`` and ``drop_items``)."""
    return callable(getattr(dataset, "check_item", None)) and callable(getattr(dataset, "drop_items", None))


def one_line(error: BaseException) -> str:
    """``error`` as ``Type: message`` on one line."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


_JPEG_END = b"\xff\xd9"  # the EOI marker, a JPEG's last two bytes (but for padding some writers add)


def _ends_like_a_jpeg(path) -> bool:
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - 64))
        return f.read().rstrip(b"\x00\n\r\t ").endswith(_JPEG_END)


def image_header(path) -> tuple[tuple[int, int] | None, str | None]:
    """``((height, width), None)`` of the image file ``path``, or ``(None, why it cannot be read)``. Reads the
    header only: PIL's ``verify`` checks the file's structure without decoding the pixels (a PNG's chunks and
    their checksums, for one). A JPEG, whose ``verify`` checks nothing past the header, is also looked at for its
    end marker, and the rare one without it (cut short, or with data appended) is decoded to tell which."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            size, jpeg = (img.height, img.width), img.format == "JPEG"
            img.verify()
        if jpeg and not _ends_like_a_jpeg(path):
            with Image.open(path) as img:
                img.load()  # raises OSError for a JPEG cut short
    except FileNotFoundError:
        return None, "missing"
    except Exception as e:  # noqa: BLE001 - PIL raises many types for a damaged file; all mean the same here
        return None, f"unreadable: {one_line(e)}"
    return size, None


def image_problem(path, size: tuple[int, int] | None = None) -> str | None:
    """Why the image file ``path`` cannot be used (its header unreadable, or not the ``(height, width)`` given),
    or None."""
    found, problem = image_header(path)
    if problem is None and size is not None and tuple(size) != found:
        assert found is not None  # no problem: the header was read
        problem = f"is {found[0]}×{found[1]} (height×width), its annotation says {size[0]}×{size[1]}"
    return problem


def read_mask(path) -> tuple[np.ndarray | None, str | None]:
    """``(pixels, None)`` of the mask file ``path`` (palette indices kept: the classes), or ``(None, why not)``."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.array(img), None
    except FileNotFoundError:
        return None, "missing"
    except Exception as e:  # noqa: BLE001 - as in image_header
        return None, f"unreadable: {one_line(e)}"


def find_bad_files(dataset, indices: Sequence[int] | None = None, *, threads: int | None = None,
                   progress: bool = False, desc: str = "checking files") -> list[BadFile]:
    """The items of ``dataset`` (``indices``, default all) whose files cannot be used, in index order."""
    if not checks_files(dataset):
        raise TypeError(f"find_bad_files: {type(dataset).__name__} has no check_item/drop_items: it is not a dataset "
                        f"read from files that can be checked")
    indices = range(len(dataset)) if indices is None else indices
    threads = threads or min(32, (os.cpu_count() or 1) + 4)
    bar = None
    if progress and len(indices) >= PROGRESS_FROM:
        from tqdm import tqdm
        bar = tqdm(total=len(indices), desc=desc, unit="file", dynamic_ncols=True, leave=False)
    bad = []
    try:
        with ThreadPoolExecutor(threads) as pool:
            for i, problem in zip(indices, pool.map(dataset.check_item, indices)):
                if problem is not None:
                    bad.append(BadFile(i, os.fspath(problem[0]), problem[1]))
                if bar is not None:
                    bar.update()
    finally:
        if bar is not None:
            bar.close()
    return bad


def keep_indices(length: int, drop) -> list[int]:
    """``range(length)`` without ``drop``: what ``drop_items`` keeps."""
    drop = set(drop)
    return [i for i in range(length) if i not in drop]
