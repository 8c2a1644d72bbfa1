"""A Hugging Face Hub cache filled by hand, offline, and a network that refuses every connection.

Files are placed in huggingface_hub's own layout (``models--ORG--NAME/blobs/<sha256>``,
``snapshots/<commit>/<file>`` linking to the blob, ``refs/main`` holding the commit), so that
``hf_hub_download`` finds them with ``HF_HUB_OFFLINE=1`` as it finds files it downloaded.
"""
from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hub cache, offline; huggingface_hub read its environment at import, so its constants are patched too."""
    constants = pytest.importorskip("huggingface_hub.constants")
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test: everything must come from local files."""
    def refuse(self, address):
        raise AssertionError(f"a test tried to connect to {address!r}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))


def put_repo(cache: Path, repo: str, files: dict[str, bytes]) -> Path:
    """Put ``files`` (name -> content) into the cache as the Hub's ``repo`` at its main revision; returns
    the snapshot folder."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / COMMIT
    for d in (root / "blobs", root / "refs", snapshot):
        d.mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.join("..", "..", "blobs", blob.name), snapshot / name)
    return snapshot


def put_folder(cache: Path, repo: str, folder) -> Path:
    """Every file of ``folder`` (written by save_pretrained) as the Hub's ``repo``."""
    folder = Path(folder)
    return put_repo(cache, repo, {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()})
