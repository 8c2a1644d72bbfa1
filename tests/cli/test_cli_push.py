"""attnvision push RUN_DIR REPO_ID: the run's repository uploaded through huggingface_hub (a stand-in HfApi here)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from attnvision.cli.main import main
from attnvision.train import TrainConfig, train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(model="resnet20", data="synthetic:1x16x16", epochs=1, batch_size=128, progress=False, threads=1,
                      out=str(out)))
    return out


def test_push_uploads_the_run_and_prints_where(run_dir, monkeypatch, capsys):
    hub = pytest.importorskip("huggingface_hub")
    calls = []

    class Api:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            calls.append((repo_id, kwargs))

        def upload_folder(self, *, repo_id, folder_path, commit_message, repo_type=None):
            calls.append({p.name: p.read_bytes() for p in Path(folder_path).iterdir()})
            return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/1"})()

    monkeypatch.setattr(hub, "HfApi", Api)
    assert main(["push", str(run_dir), "me/digits", "--private", "--commit-message", "run 1"]) == 0
    (repo, created), files = calls
    assert repo == "me/digits" and created["private"] is True and created["exist_ok"] is True
    assert set(files) == {"config.json", "model.safetensors", "README.md"}
    assert json.loads(files["config.json"])["run"]["data"] == "synthetic:1x16x16"
    assert "https://huggingface.co/me/digits/commit/1" in capsys.readouterr().out


def test_push_errors_are_one_line(run_dir, tmp_path, monkeypatch, capsys):
    assert main(["push", str(tmp_path), "me/digits"]) == 2
    assert capsys.readouterr().err.strip().endswith("is not a run directory written by `attnvision train` (or was "
                                                    "written by a version before run records)")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    assert main(["push", str(run_dir), "me/digits"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'attnvision push: error: push_to_hub: uploading to the Hugging Face Hub needs ' \
                                   'huggingface_hub: pip install "attnvision[hub]"' in err
