"""``attnvision train --attach KIND`` retrofits attention into an external model and trains it."""
from __future__ import annotations

import json

import torch
import torchvision

import attnvision as av
from attnvision.cli.main import main


def test_train_with_attach_trains_the_retrofitted_model_and_its_weights_reload(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--model", "torchvision:resnet18", "--attach", "cbam", "--attach-init", "default",
                 "--data", "synthetic:3x32x32", "--epochs", "1", "--batch-size", "64", "--threads", "1",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    with torch.device("meta"):
        expected = sum(p.numel() for p in av.create_model("resnet18_cbam", num_classes=10).parameters())
    assert summary["attach"] == "cbam" and summary["params"] == expected

    rebuilt = torchvision.models.resnet18(num_classes=10)
    inserted = av.attach(rebuilt, "cbam", init="default")
    assert len(inserted) == 8
    report = av.load_checkpoint(rebuilt, str(out / "last.safetensors"))
    assert report.missing_keys == [] and report.unexpected_keys == []
    from safetensors.torch import load_file
    saved = load_file(out / "last.safetensors")
    key = inserted[0] + ".channel.fc1.weight"
    assert key in saved and torch.equal(dict(rebuilt.named_parameters())[key], saved[key])


def test_eval_run_rebuilds_the_attached_model_from_the_run_record(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--model", "torchvision:resnet18", "--attach", "eca", "--data", "synthetic:3x32x32",
                 "--epochs", "1", "--batch-size", "128", "--threads", "1", "--no-progress", "--out", str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["attach"] == "eca"
    assert main(["eval", "--run", str(out)]) == 0
    record, summary = (json.loads((out / name).read_text()) for name in ("eval.json", "summary.json"))
    assert record["acc1"] == summary["val_acc1"] and record["count"] == 128
