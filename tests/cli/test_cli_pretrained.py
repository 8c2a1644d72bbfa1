"""``attnvision models --pretrained`` and ``attnvision eval --model NAME --pretrained``, offline."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from published_weights import offline_caches, sha256_of

import attnvision as av
from attnvision.cli.main import main
from attnvision.cli.models import weights_table
from attnvision.data import create_dataset
from attnvision.train import evaluate
from attnvision.weights.pretrained import PRETRAINED, get_weights

tvm = pytest.importorskip("torchvision.models")
pytest.importorskip("huggingface_hub")

DOCS = Path(__file__).resolve().parents[2] / "docs" / "pretrained.md"


@pytest.fixture
def caches(tmp_path, monkeypatch):
    return offline_caches(tmp_path, monkeypatch)


def _imagefolder(root, classes: int):
    """``root/{train,val}/cNNNN``: one small random image per class in val (train's folders name the classes)."""
    g = torch.Generator().manual_seed(0)
    for i in range(classes):
        (root / "train" / f"c{i:04d}").mkdir(parents=True)
        (root / "val" / f"c{i:04d}").mkdir(parents=True)
        pixels = torch.randint(0, 256, (12, 12, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(root / "val" / f"c{i:04d}" / "0.png")
    return f"imagefolder:{root}"


@pytest.fixture
def mobilenet_weights(caches, tmp_path):
    """torchvision's MobileNetV2 file (random weights) where torch.hub caches its URL; the table entry says 10
    classes (a small test folder) and this file's checksum."""
    path = tmp_path / "tv.pth"
    torch.save(tvm.mobilenet_v2(num_classes=10).state_dict(), path)
    saved = PRETRAINED.get("mobilenet_v2")
    PRETRAINED.register("mobilenet_v2", tuple(
        dataclasses.replace(e, num_classes=10, url_sha256=sha256_of(path)[:8]) if e.tag == "tv_in1k" else e
        for e in saved), override=True)
    caches.put_url(get_weights("mobilenet_v2").url, path)
    yield get_weights("mobilenet_v2")
    PRETRAINED.register("mobilenet_v2", saved, override=True)


def test_models_pretrained_lists_tags_sources_and_publisher_top1(capsys):
    assert main(["models", "--pretrained", "resnet18*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["model", "tag", "default", "top-1"]
    rows = {tuple(line.split()[:2]): line for line in lines[2:]}
    assert set(rows) == {("resnet18", "tv_in1k"), ("resnet18", "a1_in1k"), ("resnet18_eca", "eca_authors_in1k")}
    tv = get_weights("resnet18", "tv_in1k")
    assert f"{tv.top1:g}" in rows["resnet18", "tv_in1k"] and f"hf-hub:{tv.hf_hub_id}" in rows["resnet18", "tv_in1k"]
    assert rows["resnet18", "tv_in1k"].split()[2] == "yes" and "yes" not in rows["resnet18", "a1_in1k"].split()[2:3]
    eca = get_weights("resnet18_eca")
    assert f"manual download: {eca.page}" in rows["resnet18_eca", "eca_authors_in1k"]
    assert main(["models", "--pretrained", "coatnet*"]) == 1
    assert "no published weights match" in capsys.readouterr().out


def test_eval_pretrained_prints_the_measured_top1_beside_the_publishers(mobilenet_weights, tmp_path, capsys):
    spec = _imagefolder(tmp_path / "imagenet", 10)
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", "mobilenet_v2", "--pretrained", "--data", spec, "--input-size", "3", "32", "32",
                 "--threads", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    model = av.create_model("mobilenet_v2", num_classes=10, pretrained=True)
    data = create_dataset(spec, "val", input_size=(3, 32, 32), mean=model.pretrained_cfg["mean"],
                          std=model.pretrained_cfg["std"], crop_pct=0.875, interpolation="bilinear")
    expected = evaluate(model, data, batch_size=256)
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.split()}
    assert rows["measured"][0] == f"{expected.acc1:.3f}" and rows["publisher"][0] == f"{mobilenet_weights.top1:g}"
    assert rows["difference"][0] == f"{expected.acc1 - mobilenet_weights.top1:+.3f}"
    assert "mobilenet_v2.tv_in1k (published weights" in text and "10 images at 32x32, crop 0.875, bilinear" in text
    assert json.loads(out.read_text())["top1_published"] == mobilenet_weights.top1


def test_eval_pretrained_refuses_data_of_other_classes_in_one_line(mobilenet_weights, tmp_path, capsys):
    spec = _imagefolder(tmp_path / "two", 2)
    assert main(["eval", "--model", "mobilenet_v2", "--pretrained", "--data", spec, "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "into 10 classes" in err and "has 3 channels and 2 classes" in err


def test_eval_pretrained_offline_without_cache_is_one_line_exit_2(caches, capsys):
    args = ["eval", "--model", "resnet18", "--pretrained", "--data", "imagefolder:/nowhere", "--threads", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("attnvision eval: error: create_model: ")
    assert "HF_HUB_OFFLINE" in err and "create_model('resnet18.tv_in1k', pretrained=PATH)" in err


def test_eval_pretrained_takes_a_tag_not_a_file(capsys):
    assert main(["eval", "--model", "resnet18", "--pretrained", "weights.pth", "--data", "digits"]) == 2
    assert "--pretrained takes a tag of resnet18's published weights (tv_in1k, a1_in1k)" in capsys.readouterr().err


def test_docs_weights_table_is_the_one_the_code_prints():
    text = DOCS.read_text(encoding="utf-8")
    found = re.search(r"<!-- BEGIN table:weights -->\n(.*?)\n<!-- END table:weights -->", text, re.DOTALL)
    assert found and found[1] == weights_table(markdown=True), (
        "docs/pretrained.md is stale: run python tools/doc_tables.py --write, "
        "or paste `attnvision.cli.models.weights_table(markdown=True)` between its markers")
