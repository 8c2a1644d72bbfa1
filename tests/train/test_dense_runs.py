"""Detection and segmentation through the one training loop: a short run learns its canvases (mAP50, mIoU
computed by the run), the run directory rebuilds the model for ``eval``, a cut run resumes exactly, and
settings that do not fit the task are refused before anything is written."""
from __future__ import annotations

import csv
import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from attnvision import load_model
from attnvision.cli.main import main
from attnvision.data.dense import ClutteredDigitsDense
from attnvision.train import TrainConfig, train

# resnet20 with an ImageNet stem (strides 4, 8, 16), a 32-channel FPN and small heads (and, for the detector,
# fewer proposals than torchvision's defaults for 800-pixel images): about 0.4 M parameters.
HEADS = {
    "detection": ("fasterrcnn", dict(fpn_channels=32, box_head_width=64, backbone_kwargs=dict(stem="imagenet"),
                                     rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
                                     rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=50,
                                     box_batch_size_per_image=64, box_detections_per_img=20)),
    "segmentation": ("semantic_fpn", dict(fpn_channels=32, channels=32, groups=8,
                                          backbone_kwargs=dict(stem="imagenet"))),
}
LR = {"detection": 3e-3, "segmentation": 1e-2}


def _cfg(task: str, out, epochs: int, **kw) -> TrainConfig:
    arch, model_kwargs = HEADS[task]
    return TrainConfig(task=task, model=arch, backbone="resnet20", data=f"cluttered-digits-{task[:3]}",
                       epochs=epochs, batch_size=4, lr=LR[task], opt="adamw", model_kwargs=model_kwargs, threads=1,
                       progress=False, out=str(out) if out else None, **kw)


def _canvases(task: str) -> ClutteredDigitsDense:
    """Eight fixed canvases, trained and evaluated on: the run has to fit them."""
    return ClutteredDigitsDense("val", task, length=8)


def _run(task: str, out, epochs: int, **kw) -> dict:
    data = _canvases(task)
    return train(_cfg(task, out, epochs, **kw), train_set=data, val_set=data)


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("det")
    return out, _run("detection", out, epochs=15)


@pytest.mark.slow
def test_detection_run_learns_its_canvases(detection_run):
    out, summary = detection_run
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "train_loss", "val_map", "val_map_50", "val_map_75", "val_map_small",
                             "val_map_medium", "val_map_large", "lr", "seconds", "train_images_per_s"]
    first = float(rows[0]["val_map_50"])
    assert summary["val_map_50"] > 0.3 and summary["val_map_50"] > first + 0.2, (first, summary["val_map_50"])
    assert summary["val_map_50"] == pytest.approx(float(rows[-1]["val_map_50"]), abs=1e-5)
    assert summary["best_val_map"] == pytest.approx(max(float(r["val_map"]) for r in rows), abs=1e-5)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert summary["task"] == "detection" and summary["params"] > 0 and summary["macs"] > 0


@pytest.mark.slow
def test_a_detection_run_directory_rebuilds_its_detector(detection_run, capsys):
    out, _ = detection_run
    record = json.loads((out / "run.json").read_text())
    assert (record["task"], record["model"], record["backbone"], record["num_classes"]) == \
        ("detection", "fasterrcnn", "resnet20", 11)
    assert record["model_kwargs"]["min_size"] == record["model_kwargs"]["max_size"] == 64  # the canvases' size
    model = load_model(str(out / "best.safetensors"))
    best = load_file(out / "best.safetensors")
    assert model.state_dict().keys() == best.keys() and all(torch.equal(model.state_dict()[k], best[k]) for k in best)
    assert main(["eval", "--run", str(out), "--batch-size", "50"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["count"] == 200 and result["task"] == "detection"
    assert all(0.0 <= result[k] <= 1.0 for k in ("map", "map_50", "map_75", "map_small"))
    assert f"map_50 {result['map_50']:.4f}" in capsys.readouterr().out


@pytest.fixture(scope="module")
def segmentation_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("seg")
    return out, _run("segmentation", out, epochs=60)


def _canvas_png(task: str, path) -> None:
    """The first training canvas as an 8-bit PNG, as a user's image would come."""
    from PIL import Image

    canvas = _canvases(task).sample(0)[0]
    Image.fromarray((canvas * 255).round().to(torch.uint8).numpy()).save(path)


@pytest.mark.slow
def test_cam_draws_a_detection_runs_boxes_and_the_map_of_one(detection_run, tmp_path, capsys):
    out, _ = detection_run
    _canvas_png("detection", tmp_path / "canvas.png")
    assert main(["cam", "--run", str(out), "--image", str(tmp_path / "canvas.png"), "--detection", "1",
                 "--out", str(tmp_path / "cam.png")]) == 0
    printed = capsys.readouterr().out
    explained = [line for line in printed.splitlines() if line.endswith("(explained)")]
    assert len(explained) == 1 and explained[0].split()[0] == "1" and (tmp_path / "cam.png").stat().st_size > 0
    assert main(["cam", "--run", str(out), "--image", str(tmp_path / "canvas.png"), "--class", "3"]) == 2
    assert "--class is for segmentation and classification runs" in capsys.readouterr().err


@pytest.mark.slow
def test_cam_draws_a_segmentation_runs_classes_and_the_map_of_one(segmentation_run, tmp_path, capsys):
    out, _ = segmentation_run
    _canvas_png("segmentation", tmp_path / "canvas.png")
    assert main(["cam", "--run", str(out), "--image", str(tmp_path / "canvas.png"), "--out",
                 str(tmp_path / "cam.png")]) == 0
    printed = capsys.readouterr().out
    assert "% of the pixels predicted" in printed and (tmp_path / "cam.png").stat().st_size > 0


@pytest.mark.slow
def test_segmentation_run_learns_its_canvases(segmentation_run):
    tmp_path, summary = segmentation_run
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert list(rows[0])[:4] == ["epoch", "train_loss", "val_miou", "val_pixel_acc"]
    first = float(rows[0]["val_miou"])
    assert summary["val_miou"] > 0.3 and summary["val_miou"] > first + 0.2, (first, summary["val_miou"])
    assert len(summary["val_per_class_iou"]) == 11
    assert main(["eval", "--run", str(tmp_path), "--per-class"]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["count"] == 200 and 0.0 <= result["miou"] <= 1.0 and len(result["per_class_iou"]) == 11


@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_a_cut_dense_run_resumes_to_the_same_weights(tmp_path, task):
    full = _run(task, tmp_path / "full", epochs=3, deterministic=True)

    def interrupt(step):
        if step == 3:  # epoch 2, batch 1 of 2
            os.kill(os.getpid(), signal.SIGINT)

    data = _canvases(task)
    cut = train(_cfg(task, tmp_path / "cut", 3, deterministic=True), train_set=data, val_set=data, on_step=interrupt)
    assert cut["interrupted"] and cut["epochs_done"] == 1
    resumed = _run(task, tmp_path / "cut", epochs=3, deterministic=True, resume=True)
    a, b = load_file(tmp_path / "full" / "last.safetensors"), load_file(tmp_path / "cut" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    best = "val_map" if task == "detection" else "val_miou"
    assert resumed[best] == full[best]
    rows = [list(csv.DictReader(open(tmp_path / d / "metrics.csv"))) for d in ("full", "cut")]
    assert [r["train_loss"] for r in rows[0]] == [r["train_loss"] for r in rows[1]]


@pytest.mark.parametrize("argv,message", [
    (["--task", "detection", "--model", "fasterrcnn", "--backbone", "resnet20", "--data", "digits"],
     "--task detection needs detection data (cluttered-digits-det, coco:PATH, voc:PATH), got 'digits'"),
    (["--model", "resnet20", "--data", "cluttered-digits-det"],
     "--task classification needs classification data"),
    (["--task", "segmentation", "--model", "semantic_fpn", "--data", "cluttered-digits-seg"],
     "--task segmentation needs --backbone NAME"),
    (["--task", "segmentation", "--model", "semantic_fpn", "--backbone", "resnet20", "--data",
      "cluttered-digits-seg", "--min-size", "32"], "min_size do(es) not apply to --task segmentation"),
    (["--model", "resnet20", "--backbone", "resnet18"], "backbone is for detection and segmentation"),
    (["--task", "detection", "--model", "fasterrcnn", "--backbone", "resnet20", "--data", "cluttered-digits-det",
      "--num-classes", "5"], "num_classes is 5 but 'cluttered-digits-det' has 11 classes"),
])
def test_train_refuses_settings_that_do_not_fit_the_task_in_one_line(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert main(["train", *argv, "--epochs", "1", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists() or not any(out.iterdir())
