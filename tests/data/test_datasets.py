"""Datasets: the built-in digits and cluttered digits, seeded augmentation, and every data error."""
from __future__ import annotations

import pytest
import torch

from attnvision.data import ClutteredDigits, Digits, create_dataset, parse_spec
from attnvision.data.digits import digits_8x8, split_indices


def test_digits_split_is_fixed_disjoint_and_complete():
    train, val = split_indices("train"), split_indices("val")
    assert (len(train), len(val)) == (1437, 360)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(1797))
    labels = digits_8x8()[1]
    assert torch.bincount(labels, minlength=10).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_digits_are_32x32_one_channel_normalised_by_the_training_split():
    d = Digits("train")
    assert d.images.shape == (1437, 1, 32, 32)
    assert abs(d.images.mean().item()) < 1e-4 and abs(d.images.std().item() - 1) < 1e-3
    x, y = d[5]
    assert x.shape == (1, 32, 32) and 0 <= y < 10


def test_cluttered_boxes_are_tight_end_exclusive_and_inside_the_canvas():
    d = ClutteredDigits("val")
    assert len(d) == 2160 and d.images.shape == (2160, 1, 64, 64) and d.boxes.shape == (2160, 4)
    x0, y0, x1, y1 = d.boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 64).all() and (y1 <= 64).all()
    assert ((x1 - x0) >= 8).all() and ((x1 - x0) <= 32).all() and ((y1 - y0) <= 32).all()
    for i in range(0, 2160, 137):
        a, b, c, e = d.box(i)
        inside = d.raw[i, b:e, a:c]
        # tight: ink on the box's first and last rows and columns
        assert inside[0].max() > 0 and inside[-1].max() > 0 and inside[:, 0].max() > 0 and inside[:, -1].max() > 0


def test_cluttered_digits_are_deterministic_and_train_differs_from_val():
    a, b = ClutteredDigits("val"), ClutteredDigits("val")
    assert torch.equal(a.images, b.images) and torch.equal(a.boxes, b.boxes)
    assert len(ClutteredDigits("train")) == 3 * 1437
    assert not torch.equal(ClutteredDigits("train", copies=1).raw[:360], a.raw[:360])


def test_augmentation_is_seeded_per_sample_and_epoch_and_leaves_the_global_rng_alone():
    d = create_dataset("digits", "train")
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    first = d[7][0]
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(d[7][0], first)
    d.set_epoch(1)
    assert not all(torch.equal(d[i][0], create_dataset("digits", "train")[i][0]) for i in range(8))
    val = create_dataset("digits", "val")
    assert torch.equal(val[0][0], Digits("val")[0][0])  # no augmentation on val


def test_synthetic_shape_from_the_spec():
    d = create_dataset("synthetic:1x16x20", "train")
    assert d[0][0].shape == (1, 16, 20) and d.num_classes == 10 and len(d) == 512


def test_imagefolder_reads_class_folders(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            Image.new("RGB", (40, 30), (10, 200, 30)).save(tmp_path / split / c / "a.png")
    d = create_dataset(f"imagefolder:{tmp_path}", "val", input_size=(3, 24, 24))
    x, y = d[1]
    assert x.shape == (3, 24, 24) and y == 1 and d.classes == ("cat", "dog")


@pytest.mark.parametrize("spec, message", [
    ("digitz", "unknown name 'digitz'; did you mean 'digits'"),
    ("cifar10", "needs a path"),
    ("digits:5", "takes no argument"),
    ("synthetic:3x32", "synthetic takes a shape like"),
])
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        create_dataset(spec)


def test_missing_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="imagefolder: no folder at .*nowhere"):
        create_dataset(f"imagefolder:{tmp_path / 'nowhere'}")
    with pytest.raises(FileNotFoundError, match="'train' and 'val' folders"):
        create_dataset(f"imagefolder:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="cifar10: no folder at"):
        create_dataset(f"cifar10:{tmp_path / 'nowhere'}")
    with pytest.raises(FileNotFoundError, match="expected the extracted python archive 'cifar-100-python'"):
        create_dataset(f"cifar100:{tmp_path}")


def test_empty_class_folder_is_named(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        (tmp_path / split / "b").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / "a" / "x.png")
    (tmp_path / "train" / "b" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"class folder .*train/b' holds no images"):
        create_dataset(f"imagefolder:{tmp_path}", "train")


def test_unreadable_image_is_named(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        (tmp_path / split / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    d = create_dataset(f"imagefolder:{tmp_path}", "train")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.jpg"):
        d[0]


def test_wrong_cifar_archive_is_reported(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ["batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))]:
        (folder / name).write_bytes(b"something else")
    with pytest.raises(ValueError, match="is not the CIFAR10 python archive"):
        create_dataset(f"cifar10:{folder}")


def test_parse_spec_splits_name_and_path():
    assert parse_spec("cifar100:/data/c") == ("cifar100", "/data/c")
    assert parse_spec("cluttered-digits") == ("cluttered-digits", None)
