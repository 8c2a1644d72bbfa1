"""``attnvision cam``: a labelled PNG of the expected size, from a photograph and from a dataset-like sample."""
from __future__ import annotations

import json
import re
import struct

import pytest
import torch
from matplotlib import cbook
from PIL import Image

from attnvision.cli.main import main
from attnvision.explain.figure import COLUMNS, PANEL_H, PANEL_W


def _png_size(path):
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_cam_on_a_photograph_writes_png_of_the_expected_size(tmp_path, capsys):
    photo = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)   # a real photograph shipped with matplotlib
    out = tmp_path / "figs" / "hopper.png"
    rc = main(["cam", "--model", "resnet20_cbam", "--num-classes", "10", "--image", str(photo),
               "--input-size", "32", "32", "--out", str(out), "--dpi", "40", "--topk", "3"])
    assert rc == 0 and out.stat().st_size > 10_000
    # resnet20 has 9 CBAM blocks: 8 spatial maps shown, two rows of 4 under the top row
    assert _png_size(out) == (round(COLUMNS * PANEL_W * 40), round(3 * PANEL_H * 40))
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4 and printed[-1] == f"wrote {out}"
    assert sum(float(line.split("%")[0]) for line in printed[:3]) <= 100.0
    assert list(out.parent.iterdir()) == [out]   # written atomically: no temporary file left


def test_cam_on_a_dataset_sample_with_box_and_class(tmp_path, capsys):
    sample = torch.zeros(32, 32, 3, dtype=torch.uint8)
    sample[8:20, 10:18] = 255
    image = tmp_path / "digit.png"
    Image.fromarray(sample.numpy()).save(image)
    out = tmp_path / "digit_cam.png"
    rc = main(["cam", "--model", "resnet20", "--num-classes", "10", "--image", str(image), "--input-size", "32", "32",
               "--class", "3", "--box", "10", "8", "18", "20", "--method", "gradcam++", "--out", str(out),
               "--dpi", "30"])
    assert rc == 0
    assert _png_size(out) == (round(COLUMNS * PANEL_W * 30), round(PANEL_H * 30))   # no attention: one row


def test_cam_loads_the_checkpoint_and_names_classes_from_a_labels_file(tmp_path, capsys):
    from attnvision import create_model

    model = create_model("resnet20_se", num_classes=3)
    with torch.no_grad():
        model.fc.bias.copy_(torch.tensor([0.0, 40.0, 0.0]))   # class 1 wins whatever the image
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    photo = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    rc = main(["cam", "--model", "resnet20_se", "--num-classes", "3", "--checkpoint", str(tmp_path / "weights.pt"),
               "--labels", str(tmp_path / "labels.txt"), "--image", str(photo), "--input-size", "32", "32",
               "--out", str(tmp_path / "cam.png"), "--dpi", "30"])
    assert rc == 0
    first = capsys.readouterr().out.splitlines()[0].split()
    assert first == ["100.00%", "dog"]


@pytest.mark.parametrize("args, message", [
    (["--image", "missing.png"], "no image file"),
    (["--image", __file__], "cannot read"),
    (["--image", "IMG", "--class", "12"], r"target classes must lie in \[0, 10\)"),
    (["--image", "IMG", "--topk", "0"], "--topk must be at least 1"),
])
def test_cam_reports_bad_input(tmp_path, capsys, args, message):
    photo = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    args = [str(photo) if a == "IMG" else a for a in args]
    rc = main(["cam", "--model", "resnet20", "--num-classes", "10", "--input-size", "32", "32",
               "--out", str(tmp_path / "x.png"), *args])
    assert rc == 2
    assert re.search(message, capsys.readouterr().err)


def _digit_png(path):
    from attnvision.data.digits import digits_8x8, split_indices

    images, labels, _ = digits_8x8()
    i = int(split_indices("val")[0])
    Image.fromarray((images[i] * 255).round().to(torch.uint8).numpy()).resize((32, 32)).save(path)
    return str(path)


def test_cam_run_needs_nothing_else_one_channel_and_class_names(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "resnet20", "--model-kwargs", '{"stem": "imagenet"}', "--epochs", "1",
                 "--batch-size", "64", "--threads", "1", "--no-progress", "--out", str(run)]) == 0
    record = json.loads((run / "run.json").read_text())
    record["classes"] = [f"digit {c}" for c in record["classes"]]  # names other than the indices
    (run / "run.json").write_text(json.dumps(record))
    capsys.readouterr()
    out = tmp_path / "cam.png"
    assert main(["cam", "--run", str(run), "--image", _digit_png(tmp_path / "d.png"), "--out", str(out),
                 "--dpi", "30", "--topk", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4 and all(re.fullmatch(r" *\d+\.\d\d%  digit \d", line) for line in printed[:3])
    assert out.stat().st_size > 5_000


def test_cam_model_with_one_channel_reads_the_image_in_gray(tmp_path, capsys):
    out = tmp_path / "cam.png"
    assert main(["cam", "--model", "resnet20", "--model-kwargs", '{"in_chans": 1}', "--num-classes", "10",
                 "--image", _digit_png(tmp_path / "d.png"), "--out", str(out), "--dpi", "30"]) == 0
    assert out.exists()


def test_cam_run_refuses_options_that_describe_the_model_again(tmp_path, capsys):
    rc = main(["cam", "--run", str(tmp_path), "--model", "resnet20", "--num-classes", "10", "--image", "x.png"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "gives the model already; drop --model, --num-classes" in err
