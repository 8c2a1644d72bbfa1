"""Detection/segmentation data: the cluttered-digit canvases, the COCO/VOC/segfolder readers on tiny
files written here, every annotation error, transforms that move boxes and masks with the image."""
from __future__ import annotations

import json

import pytest
import torch
from torchvision.io import write_png

from attnvision.data import create_dataset, parse_spec
from attnvision.data.dense import IGNORE_INDEX, ClutteredDigitsDense, detection_collate, segmentation_collate


def test_cluttered_digits_det_boxes_bound_each_instance_mask_and_labels_are_digits_plus_one():
    data = create_dataset("cluttered-digits-det", "val")
    assert len(data) == 200 and data.num_classes == 11
    counts = []
    for i in range(20):
        image, target = data[i]
        masks, boxes = target["masks"].bool(), target["boxes"]
        assert image.shape == (3, 64, 64) and 0 <= image.min() and image.max() <= 1
        assert 1 <= len(masks) <= 4 and masks.flatten(1).any(1).all()
        for m, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
            ys, xs = m.nonzero(as_tuple=True)
            assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        canvas, layers, digits = data.sample(i)
        assert torch.equal(target["labels"], digits + 1)
        assert (masks.sum(0) <= 1).all()  # instances never share a pixel
        counts.append(len(masks))
    assert len(set(counts)) > 1


def test_cluttered_canvases_are_fixed_for_val_and_fresh_per_train_epoch_yet_reproducible():
    train = ClutteredDigitsDense("train", "detection")
    first = train[3][0].clone()
    train.set_epoch(1)
    assert not torch.equal(train[3][0], first)
    train.set_epoch(0)
    assert torch.equal(train[3][0], first)
    assert torch.equal(ClutteredDigitsDense("train", "detection")[3][0], first)
    val = ClutteredDigitsDense("val", "detection")
    a = val[5][0].clone()
    val.set_epoch(4)
    assert torch.equal(val[5][0], a)


def test_cluttered_digits_seg_marks_ink_by_digit_rims_ignored_and_clutter_as_background():
    data = create_dataset("cluttered-digits-seg", "train")
    det = ClutteredDigitsDense("train", "detection")
    for i in range(5):
        image, mask = data[i]
        _, target = det[i]
        for m, label in zip(target["masks"].bool(), target["labels"]):
            assert (mask[m] == label).all()
        canvas, layers, _ = data.sample(i)
        top = layers.amax(0)
        assert (mask[(top > 0.05) & (top < 0.5)] == IGNORE_INDEX).all()  # anti-aliased rims
        assert (mask[top == 0] == 0).all()  # clutter alone is background
        assert set(mask.unique().tolist()) <= set(range(11)) | {IGNORE_INDEX}
        assert (mask == IGNORE_INDEX).any()


def _png(path, h=20, w=30, value=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = torch.randint(0, 255, (3, h, w), dtype=torch.uint8) if value is None else value
    write_png(img, str(path))


def _coco(root, anns, cats=({"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}), files=("a.png",)):
    for f in files:
        _png(root / "train" / f)
    images = [dict(id=i + 1, file_name=f, width=30, height=20) for i, f in enumerate(("a.png",))]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_train.json").write_text(
        json.dumps(dict(images=images, annotations=anns, categories=list(cats))))


def _ann(i=1, cat=7, bbox=(2, 3, 10, 8), seg=None):
    x, y, w, h = bbox
    return dict(id=i, image_id=1, category_id=cat, bbox=list(bbox), area=w * h, iscrowd=0,
                segmentation=seg if seg is not None else [[x, y, x + w, y, x + w, y + h, x, y + h]])


def test_coco_reader_gives_boxes_masks_and_contiguous_labels(tmp_path):
    _coco(tmp_path, [_ann(1, 7), _ann(2, 3, bbox=(10, 5, 4, 4))])
    data = create_dataset(f"coco:{tmp_path}", "train", augment=False)
    image, target = data[0]
    assert data.classes == ("background", "cat", "dog") and image.shape == (3, 20, 30) and image.dtype == torch.float32
    assert target["boxes"].tolist() == [[2, 3, 12, 11], [10, 5, 14, 9]]
    assert target["labels"].tolist() == [2, 1]
    assert target["masks"].shape == (2, 20, 30) and target["masks"][0, 5, 5] == 1 and target["masks"][0, 15, 25] == 0


@pytest.mark.parametrize("anns,files,match", [
    ([_ann(bbox=(25, 3, 10, 8))], ("a.png",), "outside"),
    ([_ann(cat=99)], ("a.png",), "unknown category id 99"),
    ([_ann()], (), "missing file"),
])
def test_coco_annotation_errors_name_the_file(tmp_path, anns, files, match):
    _coco(tmp_path, anns, files=files)
    with pytest.raises(ValueError, match=match) as e:
        create_dataset(f"coco:{tmp_path}", "train")
    assert "instances_train.json" in str(e.value)


def test_coco_empty_mask_is_an_error_naming_the_file(tmp_path):
    _coco(tmp_path, [_ann(seg=[[40, 40, 41, 40, 41, 41]])])
    data = create_dataset(f"coco:{tmp_path}", "train")
    with pytest.raises(ValueError, match="empty mask") as e:
        data[0]
    assert "instances_train.json" in str(e.value)


def _voc(root, objects, size=(30, 20), image=True):
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("0001\n")
    (root / "Annotations").mkdir()
    objs = "".join(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, d, b in objects)
    (root / "Annotations" / "0001.xml").write_text(
        f"<annotation><filename>0001.jpg</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
        f"</size>{objs}</annotation>")
    if image:
        from torchvision.io import write_jpeg
        (root / "JPEGImages").mkdir()
        write_jpeg(torch.zeros(3, 20, 30, dtype=torch.uint8), str(root / "JPEGImages" / "0001.jpg"))


def test_voc_reader_converts_one_based_corners_and_marks_difficult_as_crowd(tmp_path):
    _voc(tmp_path, [("dog", 0, (1, 2, 10, 20)), ("person", 1, (5, 5, 30, 15))])
    image, target = create_dataset(f"voc:{tmp_path}", "train", augment=False)[0]
    assert target["boxes"].tolist() == [[0, 1, 10, 20], [4, 4, 30, 15]]
    assert target["labels"].tolist() == [12, 15] and target["iscrowd"].tolist() == [0, 1]


@pytest.mark.parametrize("objects,image,match", [
    ([("dog", 0, (1, 2, 31, 20))], True, "outside"),
    ([("unicorn", 0, (1, 2, 10, 10))], True, "unknown class 'unicorn'"),
    ([("dog", 0, (1, 2, 10, 10))], False, "missing image file"),
])
def test_voc_annotation_errors_name_the_file(tmp_path, objects, image, match):
    _voc(tmp_path, objects, image=image)
    with pytest.raises(ValueError, match=match) as e:
        create_dataset(f"voc:{tmp_path}", "train")
    assert "0001.xml" in str(e.value)


def test_segfolder_reads_pairs_and_rejects_missing_masks_and_unknown_classes(tmp_path):
    _png(tmp_path / "images" / "train" / "x.png", 8, 6)
    mask = torch.tensor([0, 1, 2, 255] * 12, dtype=torch.uint8).reshape(1, 8, 6)
    _png(tmp_path / "masks" / "train" / "x.png", value=mask)
    data = create_dataset(f"segfolder:{tmp_path}", "train", augment=False, num_classes=3)
    image, target = data[0]
    assert image.shape == (3, 8, 6) and image.dtype == torch.float32 and torch.equal(target, mask[0].long())
    with pytest.raises(ValueError, match="num_classes"):
        create_dataset(f"segfolder:{tmp_path}", "train")
    with pytest.raises(ValueError, match=r"x\.png has class values \[2\]"):
        create_dataset(f"segfolder:{tmp_path}", "train", num_classes=2)[0]
    _png(tmp_path / "images" / "train" / "y.png", 8, 6)
    with pytest.raises(ValueError, match=r"y\.png has no mask file .*y\.png"):
        create_dataset(f"segfolder:{tmp_path}", "train", num_classes=3)


def test_train_flips_move_boxes_and_masks_with_the_image_seeded_per_epoch(tmp_path):
    _coco(tmp_path, [_ann(1, 7)])
    data = create_dataset(f"coco:{tmp_path}", "train")
    plain = create_dataset(f"coco:{tmp_path}", "train", augment=False)[0]
    seen = set()
    for epoch in range(8):
        data.set_epoch(epoch)
        image, target = data[0]
        again = data[0]
        assert torch.equal(image, again[0])
        flipped = not torch.equal(image, plain[0])
        seen.add(flipped)
        if flipped:
            assert torch.equal(image, plain[0].flip(-1))
            assert torch.equal(target["masks"], plain[1]["masks"].flip(-1))
            assert target["boxes"].tolist() == [[30 - 12, 3, 30 - 2, 11]]
    assert seen == {True, False}


def test_collates_keep_detection_lists_and_pad_segmentation_with_the_ignore_index():
    images, targets = detection_collate([(torch.zeros(3, 4, 5), {"a": 1}), (torch.zeros(3, 6, 2), {"a": 2})])
    assert [i.shape for i in images] == [(3, 4, 5), (3, 6, 2)] and [t["a"] for t in targets] == [1, 2]
    x, y = segmentation_collate([(torch.ones(3, 4, 5), torch.zeros(4, 5, dtype=torch.long)),
                                 (torch.ones(3, 6, 2), torch.ones(6, 2, dtype=torch.long))])
    assert x.shape == (2, 3, 6, 5) and y.shape == (2, 6, 5)
    assert (y[0, 4:] == IGNORE_INDEX).all() and (y[1, :, 2:] == IGNORE_INDEX).all() and x[1, :, :, 2:].sum() == 0


def test_dense_specs_parse_and_reject_arguments_they_do_not_take():
    assert parse_spec("voc:/data") == ("voc", "/data")
    with pytest.raises(ValueError, match="takes no argument"):
        parse_spec("cluttered-digits-det:x")
    with pytest.raises(ValueError, match="needs a path"):
        parse_spec("coco")
    with pytest.raises(ValueError, match="num_classes"):
        create_dataset("digits", num_classes=3)


def test_segfolder_training_flips_move_the_mask_with_the_image(tmp_path):
    _png(tmp_path / "images" / "train" / "x.png", 4, 6)
    _png(tmp_path / "masks" / "train" / "x.png", value=torch.arange(24, dtype=torch.uint8).reshape(1, 4, 6) % 3)
    data = create_dataset(f"segfolder:{tmp_path}", "train", num_classes=3)
    plain_image, plain_mask = create_dataset(f"segfolder:{tmp_path}", "train", augment=False, num_classes=3)[0]
    flips = 0
    for epoch in range(8):
        data.set_epoch(epoch)
        image, mask = data[0]
        if torch.equal(mask, plain_mask.flip(-1)):
            flips += 1
            torch.testing.assert_close(image, plain_image.flip(-1))
        else:
            assert torch.equal(mask, plain_mask) and torch.equal(image, plain_image)
    assert 0 < flips < 8
