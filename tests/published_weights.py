"""Offline download caches for the tests of published weights, filled by hand, the network refused.

The Hugging Face cache is written in huggingface_hub's own layout (``models--ORG--NAME/blobs/<sha256>``,
``snapshots/<commit>/<file>`` linking to the blob, ``refs/main`` holding the commit) and the Hub is
offline; URL files go where torch.hub keeps them (``<hub dir>/checkpoints/<file name>``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
from pathlib import Path

import torch

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclasses.dataclass
class OfflineCaches:
    hub: Path        # HF_HUB_CACHE
    torch_hub: Path  # torch.hub.get_dir()

    def put_hub(self, repo: str, filename: str, source) -> Path:
        """Put the file ``source`` in the Hub cache as ``repo``'s ``filename``; returns its snapshot path."""
        data = Path(source).read_bytes()
        root = self.hub / ("models--" + repo.replace("/", "--"))
        for d in ("blobs", "refs", f"snapshots/{COMMIT}"):
            (root / d).mkdir(parents=True, exist_ok=True)
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (root / "refs" / "main").write_text(COMMIT)
        link = root / "snapshots" / COMMIT / filename
        os.symlink(os.path.join("..", "..", "blobs", blob.name), link)
        return link

    def put_url(self, url: str, source) -> Path:
        """Put the file ``source`` where torch.hub caches ``url``."""
        path = self.torch_hub / "checkpoints" / url.rsplit("/", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(Path(source).read_bytes())
        return path


def offline_caches(tmp_path: Path, monkeypatch) -> OfflineCaches:
    """Empty caches under ``tmp_path``, offline, any connection attempt an assertion error."""
    from huggingface_hub import constants

    caches = OfflineCaches(tmp_path / "hf-cache", tmp_path / "torch-hub")
    caches.hub.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(caches.hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub read its environment when it was imported
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(caches.hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(caches.torch_hub))

    def refuse(self, address):
        raise AssertionError(f"a test tried to connect to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))
    return caches
