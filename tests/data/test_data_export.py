"""attnvision data export: a dataset's images as PNG files that read back to the dataset's pixels."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from attnvision.cli.main import main
from attnvision.data import create_dataset


def test_exported_pngs_hold_the_datasets_images_unnormalised_with_their_labels_and_boxes(tmp_path, capsys):
    assert main(["data", "export", "cluttered-digits", "--split", "val", "--count", "3", "--out", str(tmp_path)]) == 0
    data = create_dataset("cluttered-digits", "val", augment=False)
    with open(tmp_path / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    for i, row in enumerate(rows):
        image, label = data[i]
        pixels = np.asarray(Image.open(tmp_path / row["file"]), dtype=np.float64) / 255
        expected = (image[0].numpy() * data.std[0] + data.mean[0]).clip(0, 1)
        assert pixels.shape == expected.shape and np.abs(pixels - expected).max() <= 0.5 / 255 + 1e-6
        assert int(row["label"]) == label and row["box_x0_y0_x1_y1"] == " ".join(str(int(v)) for v in data.boxes[i])
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / r["file"]) for r in rows]


def test_the_imagefolder_layout_trains_as_imagefolder_data(tmp_path):
    for split in ("train", "val"):
        assert main(["data", "export", "digits", "--split", split, "--count", "100", "--imagefolder",
                     "--out", str(tmp_path)]) == 0
    data = create_dataset(f"imagefolder:{tmp_path}", "val", input_size=(3, 32, 32))
    assert len(data) == 100 and data[0][0].shape == (3, 32, 32) and data.num_classes == 10


@pytest.mark.parametrize("argv, message", [
    (["coco:/nowhere"], "'coco:/nowhere' is detection data; export takes classification data"),
    (["digits", "--count", "0"], "count must be a positive integer, got 0"),
    (["digits", "--start", "5000"], "images 5000..5007 asked for, but the val split of 'digits' has"),
])
def test_bad_exports_are_one_line_errors_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(["data", "export", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err and not out.exists()
