"""save_pretrained and push_to_hub (models and run directories), and load_model reading what they write: from the
folder, and as hf-hub:ORG/NAME through a Hub cache filled by hand (offline); uploads go to a stand-in HfApi."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from hub_cache import put_folder, put_repo
from safetensors import safe_open

import attnvision as av
from attnvision.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("no_network")
FILES = {"config.json", "model.safetensors", "README.md"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished run of resnet20 with SE attached, on 1-channel synthetic data."""
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(model="resnet20", attach="se", data="synthetic:1x16x16", epochs=1, batch_size=128,
                      progress=False, threads=1, out=str(out)))
    return out


def _front_matter(card: str) -> dict:
    head = card.split("---\n")[1]
    out, key = {}, None
    for line in head.splitlines():
        if line.startswith("- "):
            out.setdefault(key, []).append(json.loads(line[2:]))
        else:
            key, _, value = line.partition(": ")
            key = key.rstrip(":")
            out[key] = value or []
    return out


def _equal_outputs(a, b, x) -> bool:
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_a_run_directory_is_saved_with_its_record_and_card_and_loads_back_identical(run_dir, tmp_path):
    folder = Path(av.save_pretrained(run_dir, tmp_path / "repo", repo_id="me/digits-se"))
    assert {p.name for p in folder.iterdir()} == FILES  # no temporary file left
    config = json.loads((folder / "config.json").read_text())
    record = json.loads((run_dir / "run.json").read_text())
    assert config["library_name"] == "attnvision" and config["architecture"] == "resnet20"
    assert config["attach"] == "se" and config["in_chans"] == 1 and config["num_classes"] == 10
    assert config["classes"] == record["classes"] and config["weights"] == "best.safetensors"
    assert config["run"]["config"]["lr"] == record["config"]["lr"] and "out" not in config["run"]["config"]
    card = (folder / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["library_name"] == "attnvision" and meta["license"] == "apache-2.0"
    assert meta["tags"] == ["attnvision", "image-classification", "resnet20", "se"]
    assert meta["pipeline_tag"] == "image-classification"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"| val_acc1 | {summary['val_acc1']:.4g} |" in card and f"| params | {summary['params']} |" in card
    assert "Deep Residual Learning" in card and 'attnvision.load_model("hf-hub:me/digits-se")' in card
    assert "| opt | sgd |" in card and "synthetic:1x16x16" in card
    rebuilt = av.load_model(folder)
    assert _equal_outputs(rebuilt, av.load_model(run_dir / "best.safetensors"), torch.randn(2, 1, 16, 16))
    assert rebuilt.pretrained_cfg["input_size"] == (1, 16, 16)


def test_a_saved_run_loads_from_the_hub_cache_identical(run_dir, tmp_path, hub_cache):
    folder = av.save_pretrained(run_dir, tmp_path / "repo")
    put_folder(hub_cache, "me/digits-se", folder)
    model = av.load_model("hf-hub:me/digits-se")
    assert model.pretrained_cfg["hf_hub_id"] == "me/digits-se"
    assert _equal_outputs(model, av.load_model(folder), torch.randn(2, 1, 16, 16))


def test_a_model_is_saved_and_reloads_identical_from_folder_file_and_hub(tmp_path, hub_cache):
    model = av.create_model("resnet20_eca", num_classes=4, drop_rate=0.2).eval()
    folder = Path(av.save_pretrained(model, tmp_path / "repo"))
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet20_eca" and config["model_kwargs"] == {"drop_rate": 0.2}
    assert config["pretrained_cfg"]["paper"] == model.pretrained_cfg["paper"]
    assert "ECA-Net" in (folder / "README.md").read_text() and "Training" not in (folder / "README.md").read_text()
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert "attnvision.model" in f.metadata()  # the weights file alone rebuilds its model too
    put_folder(hub_cache, "me/eca", folder)
    x = torch.randn(2, 3, 32, 32)
    for loaded in (av.load_model(folder), av.load_model(folder / "model.safetensors"), av.load_model("hf-hub:me/eca"),
                   av.create_model("hf-hub:me/eca")):
        assert loaded.drop_rate == 0.2 and _equal_outputs(loaded, model, x)


def test_save_pretrained_writes_over_an_earlier_save(tmp_path):
    first, second = av.create_model("resnet20", num_classes=2), av.create_model("resnet20", num_classes=2)
    av.save_pretrained(first, tmp_path)
    av.save_pretrained(second, tmp_path)
    assert _equal_outputs(av.load_model(tmp_path), second, torch.randn(1, 3, 32, 32))
    assert {p.name for p in tmp_path.iterdir()} == FILES


def test_what_save_pretrained_cannot_rebuild_is_refused_in_one_line(tmp_path):
    attached = av.create_model("resnet20")
    av.attach(attached, "se")
    cases = [(av.create_model("resnet20", features_only=True), ValueError, "is a feature extractor"),
             (attached, ValueError, "holds attention added by attach\\(\\)"),
             (torch.nn.Linear(2, 2), ValueError, "Linear does not name a registered architecture"),
             (tmp_path, FileNotFoundError, "holds no run.json"),
             (3, TypeError, "expected a model or a run directory, got int")]
    for what, error, message in cases:
        with pytest.raises(error, match=f"save_pretrained: .*{message}") as err:
            av.save_pretrained(what, tmp_path / "out")
        assert "\n" not in str(err.value)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        av.save_pretrained(av.create_model("resnet20"), tmp_path / "file")


def test_a_folder_in_another_format_is_refused_naming_what_it_holds(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet50", "num_classes": 1000}))
    with pytest.raises(ValueError, match="neither an attnvision model .* timm's \\(architecture 'resnet50'\\)"):
        av.load_model(tmp_path)


class FakeApi:
    """huggingface_hub.HfApi's create_repo and upload_folder, recording what they were given."""

    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, *, private=False, exist_ok=False, repo_type=None):
        FakeApi.calls.append(("create_repo", repo_id, dict(private=private, exist_ok=exist_ok, token=self.token)))

    def upload_folder(self, *, repo_id, folder_path, commit_message, repo_type=None):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        FakeApi.calls.append(("upload_folder", repo_id, dict(files=files, commit_message=commit_message)))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


@pytest.fixture
def fake_api(monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    FakeApi.calls = []
    monkeypatch.setattr(hub, "HfApi", FakeApi)
    return FakeApi


def test_push_to_hub_uploads_what_save_pretrained_writes(tmp_path, fake_api):
    model = av.create_model("resnet20", num_classes=3)
    url = av.push_to_hub(model, "me/r20", private=True, token="tok", commit_message="first")
    assert url == "https://huggingface.co/me/r20/commit/abc"
    (_, repo, created), (_, repo2, uploaded) = fake_api.calls
    assert repo == repo2 == "me/r20" and created == dict(private=True, exist_ok=True, token="tok")
    assert set(uploaded["files"]) == FILES and uploaded["commit_message"] == "first"
    saved = Path(av.save_pretrained(model, tmp_path / "same", repo_id="me/r20"))
    for name, data in uploaded["files"].items():  # the same files, byte for byte
        assert data == (saved / name).read_bytes(), name


def test_push_to_hub_errors_are_one_line(monkeypatch, fake_api):
    from huggingface_hub.utils import HfHubHTTPError

    class Response:
        status_code, headers, url, request = 401, {}, "https://huggingface.co/api/repos/create", None

    def refuse(self, *a, **k):
        raise HfHubHTTPError("401 Client Error: Unauthorized", response=Response())

    monkeypatch.setattr(fake_api, "create_repo", refuse)
    with pytest.raises(PermissionError, match=r"push_to_hub: the Hugging Face Hub refused to write 'me/r20' "
                                              r"\(HTTP 401\): log in"):
        av.push_to_hub(av.create_model("resnet20"), "me/r20")
    with pytest.raises(ValueError, match="repo_id must be 'ORG/NAME', got 'r20'"):
        av.push_to_hub(av.create_model("resnet20"), "r20")


def test_push_to_hub_without_huggingface_hub_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r'^push_to_hub: .* needs huggingface_hub: pip install "attnvision\[hub\]"$'):
        av.push_to_hub(av.create_model("resnet20"), "me/r20")


@pytest.mark.parametrize("safe", [True, False], ids=["model.safetensors", "pytorch_model.bin"])
def test_a_transformers_van_repository_loads_from_the_hub_cache_as_its_folder_does(tmp_path, hub_cache, safe):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.VanConfig(hidden_sizes=[32, 64, 160, 256], depths=[3, 3, 5, 2], num_labels=4)
    transformers.VanForImageClassification(cfg).save_pretrained(tmp_path / "van", safe_serialization=safe)
    put_folder(hub_cache, "hf/van-b0", tmp_path / "van")
    model = av.load_model("hf-hub:hf/van-b0")
    assert model.num_classes == 4 and _equal_outputs(model, av.load_model(tmp_path / "van"), torch.randn(1, 3, 64, 64))


def test_a_hub_repository_in_another_format_is_refused_by_load_model(hub_cache):
    put_repo(hub_cache, "hf/vit", {"config.json": json.dumps({"model_type": "vit"}).encode()})
    with pytest.raises(ValueError, match="load_model: hf-hub:hf/vit is neither an attnvision repository nor a "
                                         "transformers VAN: its config.json is a transformers config"):
        av.load_model("hf-hub:hf/vit")
