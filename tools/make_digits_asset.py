"""Write ``attnvision/data/assets/digits.npz`` from scikit-learn's bundled 8×8 digits.

Run once; the library then reads the file it wrote and needs no scikit-learn. The source is
the UCI "Optical Recognition of Handwritten Digits" test set as scikit-learn ships it
(``sklearn/datasets/data/digits.csv.gz``: 1,797 rows of 64 pixel counts in 0..16 and a label).
The CSV is read straight from the installed package, so scikit-learn's own dependencies need
not be importable.

    python tools/make_digits_asset.py [--csv PATH]
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import io
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from attnvision.io import atomic_write  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "attnvision", "data", "assets", "digits.npz")


def sklearn_csv() -> str:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-learn is not installed; pass --csv PATH to its datasets/data/digits.csv.gz")
    return os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", help="path of digits.csv.gz (default: the installed scikit-learn's)")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()
    with gzip.open(args.csv or sklearn_csv(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (1797, 65) or table[:, :64].max() > 16 or table[:, :64].min() < 0:
        raise SystemExit(f"unexpected digits table of shape {table.shape}")
    images = table[:, :64].reshape(-1, 8, 8).astype(np.uint8)
    labels = table[:, 64].astype(np.uint8)

    def write(tmp):
        buf = io.BytesIO()
        np.savez_compressed(buf, images=images, labels=labels)
        with open(tmp, "wb") as f:
            f.write(buf.getvalue())

    atomic_write(args.out, write)
    print(f"wrote {os.path.normpath(args.out)}: {len(images)} images, labels {np.bincount(labels).tolist()}")


if __name__ == "__main__":
    main()
