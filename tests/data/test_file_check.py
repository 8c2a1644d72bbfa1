"""Files checked before a run reads them: image headers (and sizes against annotations), masks read whole with
their classes in range; bad items named with their file and reason, and left out on request."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from attnvision.data import create_dataset
from attnvision.data.check import checks_files, find_bad_files, image_header


def _image(path, size=(12, 10), mode="RGB", value=None):
    """An image of ``size`` (width, height) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if value is None:
        Image.new(mode, size, 90).save(path)
    else:
        Image.fromarray(value).save(path)


def _truncated(path):
    _image(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _imagefolder(root):
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            for k in range(3):
                _image(root / split / c / f"{k}.png")
    (root / "train" / "cat" / "garbage.jpg").write_bytes(b"not an image at all")
    _truncated(root / "train" / "dog" / "half.png")


def test_imagefolder_bad_images_are_named_with_their_reason_and_can_be_left_out(tmp_path):
    _imagefolder(tmp_path)
    data = create_dataset(f"imagefolder:{tmp_path}", "train", input_size=(3, 8, 8))
    assert checks_files(data) and len(data) == 8
    bad = find_bad_files(data, threads=3)
    assert [(b.path.split("/")[-1], b.reason.split(":")[0]) for b in bad] == [("garbage.jpg", "unreadable"),
                                                                              ("half.png", "unreadable")]
    assert [b.index for b in bad] == [i for i in range(8) if data._data.samples[i][0] in {b.path for b in bad}]
    assert find_bad_files(data, [i for i in range(8) if i != bad[0].index]) == bad[1:]  # a share of the items
    labels = [label for path, label in data._data.samples if not path.endswith(("garbage.jpg", "half.png"))]
    data.drop_items([b.index for b in bad])
    assert len(data) == 6 and [data[i][1] for i in range(6)] == labels and find_bad_files(data) == []
    assert data[0][0].shape == (3, 8, 8)


def test_a_jpeg_cut_short_is_found_one_with_data_after_its_end_is_not(tmp_path):
    """A JPEG's header survives the cut (PIL's verify alone passes it); its missing end marker gets it decoded."""
    pixels = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "whole.jpg", quality=90)
    data = (tmp_path / "whole.jpg").read_bytes()
    files = {"cut.jpg": data[:len(data) * 2 // 3], "appended.jpg": data + bytes(range(256)) * 20,
             "padded.jpg": data + b"\x00" * 10}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    with Image.open(tmp_path / "cut.jpg") as img:
        img.verify()  # what a header check alone sees: nothing wrong
    assert image_header(tmp_path / "whole.jpg") == ((40, 50), None)
    size, problem = image_header(tmp_path / "cut.jpg")
    assert size is None and problem is not None and problem.startswith("unreadable: OSError: image file is truncated")
    assert image_header(tmp_path / "appended.jpg") == ((40, 50), None)  # e.g. a motion photo's video
    assert image_header(tmp_path / "padded.jpg") == ((40, 50), None)


def _coco(root, width, height):
    _image(root / "train" / "a.png", (30, 20))
    images = [dict(id=1, file_name="a.png", width=width, height=height)]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train.json").write_text(json.dumps(dict(
        images=images, categories=[{"id": 1, "name": "cat"}],
        annotations=[dict(id=1, image_id=1, category_id=1, bbox=[1, 1, 5, 5], area=25, iscrowd=0,
                          segmentation=[[1, 1, 6, 1, 6, 6, 1, 6]])])))


def test_coco_images_must_have_the_size_their_annotation_gives(tmp_path):
    _coco(tmp_path / "ok", 30, 20)
    assert find_bad_files(create_dataset(f"coco:{tmp_path / 'ok'}", "train")) == []
    _coco(tmp_path / "bad", 30, 40)
    [bad] = find_bad_files(create_dataset(f"coco:{tmp_path / 'bad'}", "train"))
    assert bad.path.endswith("a.png") and bad.reason == "is 20×30 (height×width), its annotation says 40×30"


def test_voc_images_must_be_readable_and_of_their_annotated_size(tmp_path):
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("0001\n0002\n")
    (tmp_path / "Annotations").mkdir()
    for stem in ("0001", "0002"):
        (tmp_path / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>30</width><height>20</height></size>"
            f"<object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>"
            f"</object></annotation>")
    _image(tmp_path / "JPEGImages" / "0001.jpg", (30, 20))
    _image(tmp_path / "JPEGImages" / "0002.jpg", (31, 20))
    data = create_dataset(f"voc:{tmp_path}", "train")
    [bad] = find_bad_files(data)
    assert bad.index == 1 and bad.path.endswith("0002.jpg") and "its annotation says 20×30" in bad.reason
    data.drop_items([1])
    assert len(data) == 1 and data[0][1]["labels"].tolist() == [12]


def test_segfolder_masks_are_read_whole_and_their_classes_checked(tmp_path):
    masks = {"good": np.array([[0, 1], [2, 255]] * 5, dtype=np.uint8).repeat(6, 1),  # (10, 12), 255 ignored
             "high": np.full((10, 12), 3, dtype=np.uint8),
             "small": np.zeros((5, 12), dtype=np.uint8),
             "rgb": np.zeros((10, 12, 3), dtype=np.uint8)}
    for name, mask in masks.items():
        _image(tmp_path / "images" / "train" / f"{name}.png")
        _image(tmp_path / "masks" / "train" / f"{name}.png", value=mask)
    _image(tmp_path / "images" / "train" / "torn.png")
    _truncated(tmp_path / "masks" / "train" / "torn.png")
    data = create_dataset(f"segfolder:{tmp_path}", "train", num_classes=3, augment=False)
    reasons = {b.path.split("/")[-1]: b.reason for b in find_bad_files(data)}
    assert reasons.keys() == {"high.png", "small.png", "rgb.png", "torn.png"}
    assert all("/masks/" in b.path for b in find_bad_files(data))
    assert reasons["high.png"] == "has class values [3] outside 0…2 and not the ignore index 255"
    assert reasons["small.png"] == "is (5, 12), its image (10, 12)"
    assert reasons["rgb.png"].startswith("must be one channel") and reasons["torn.png"].startswith("unreadable")
    # what the check finds is what reading the item refuses
    with pytest.raises(ValueError, match=r"high\.png has class values \[3\]"):
        data[[p.name for p, _ in data.items].index("high.png")]


def test_find_bad_files_refuses_data_it_cannot_check():
    with pytest.raises(TypeError, match="find_bad_files: Synthetic has no check_item"):
        find_bad_files(create_dataset("synthetic:1x8x8").base)
