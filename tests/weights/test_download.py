"""fetch_weights: the Hub cache and torch's hub cache, checksums and offline errors, without the network.

The Hub cache is filled by hand in huggingface_hub's own layout (``models--ORG--NAME/blobs/<sha256>``,
``snapshots/<commit>/<file>`` linking to the blob, ``refs/main`` holding the commit) and the Hub is
kept offline; URLs are ``file://`` URLs of local files.
"""
from __future__ import annotations

import hashlib
import os

import pytest
import torch

from attnvision.weights import download
from attnvision.weights.download import fetch_weights

hub_constants = pytest.importorskip("huggingface_hub.constants")

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "someorg/tiny-weights"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


pytestmark = pytest.mark.usefixtures("no_network")  # hub_cache and no_network: tests/hub_cache.py



@pytest.fixture(autouse=True)
def torch_hub_dir(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch-hub"))
    yield tmp_path / "torch-hub"
    torch.hub.set_dir(old)


def put_in_hub_cache(cache, data: bytes, filename: str = "model.safetensors", repo: str = REPO):
    """Write ``data`` as the Hub would: the blob named by its sha256, a relative snapshot link, refs/main."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "blobs").mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "snapshots" / COMMIT).mkdir(parents=True)
    blob = root / "blobs" / sha256(data)
    blob.write_bytes(data)
    (root / "refs" / "main").write_text(COMMIT)
    link = root / "snapshots" / COMMIT / filename
    os.symlink(os.path.join("..", "..", "blobs", blob.name), link)
    return link, blob


# -- the Hugging Face Hub route --------------------------------------------------------------

def test_hub_file_in_cache_is_returned_offline_after_its_checksum(hub_cache):
    data = b"weights of a tiny model"
    link, _ = put_in_hub_cache(hub_cache, data)
    path = fetch_weights({"hf_hub_id": REPO, "sha256": sha256(data)})
    assert os.path.samefile(path, link)
    with open(path, "rb") as f:
        assert f.read() == data


def test_hub_file_other_than_model_safetensors_is_found_by_its_name(hub_cache):
    data = b"an authors' checkpoint"
    link, _ = put_in_hub_cache(hub_cache, data, filename="van_tiny_754.pth.tar")
    path = fetch_weights({"hf_hub_id": REPO, "hf_hub_filename": "van_tiny_754.pth.tar"})
    assert os.path.samefile(path, link)


def test_verified_file_is_not_hashed_again_until_it_changes(hub_cache, monkeypatch):
    data = b"weights hashed once"
    _, blob = put_in_hub_cache(hub_cache, data)
    cfg = {"hf_hub_id": REPO, "sha256": sha256(data)}
    calls = []
    real = download._sha256
    monkeypatch.setattr(download, "_sha256", lambda p: calls.append(p) or real(p))
    fetch_weights(cfg)
    fetch_weights(cfg)
    assert len(calls) == 1
    blob.write_bytes(b"weights changed on disk!")  # another size: the remembered hash no longer applies
    with pytest.raises(ValueError, match="expected"):
        fetch_weights(cfg)
    assert len(calls) == 2


def test_hub_checksum_mismatch_is_one_line_and_removes_blob_and_link(hub_cache):
    data = b"corrupted weights"
    link, blob = put_in_hub_cache(hub_cache, data)
    expected = sha256(b"the published weights")
    with pytest.raises(ValueError) as err:
        fetch_weights({"hf_hub_id": REPO, "sha256": expected}, who="create_model")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("create_model: ")
    assert str(link) in msg and expected in msg and sha256(data) in msg
    assert not blob.exists() and not os.path.lexists(link)


def test_hub_offline_with_empty_cache_names_repo_url_and_offline_route(hub_cache):
    with pytest.raises(OSError) as err:
        fetch_weights({"hf_hub_id": REPO}, who="create_model")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("create_model: ")
    assert f"https://huggingface.co/{REPO}/resolve/main/model.safetensors" in msg
    assert "pretrained=PATH" in msg and "HF_HUB_OFFLINE" in msg


def test_hub_offline_uses_the_same_weights_cached_under_their_url(hub_cache, torch_hub_dir):
    data = b"the same weights, cached by torch.hub"
    (torch_hub_dir / "checkpoints").mkdir(parents=True)
    (torch_hub_dir / "checkpoints" / "tiny-1234abcd.pth").write_bytes(data)
    # sha256 is the Hub file's (another file: its safetensors copy), url_sha256 the .pth's
    cfg = {"hf_hub_id": REPO, "url": "file:///nonexistent/tiny-1234abcd.pth", "sha256": sha256(b"safetensors copy"),
           "url_sha256": sha256(data)[:8]}
    assert fetch_weights(cfg) == str(torch_hub_dir / "checkpoints" / "tiny-1234abcd.pth")


def test_without_huggingface_hub_the_error_names_the_extra_and_the_offline_route(monkeypatch):
    monkeypatch.setattr(download, "_import_hub", lambda: None)
    with pytest.raises(ImportError) as err:
        fetch_weights({"hf_hub_id": REPO, "hf_hub_filename": "w.safetensors"}, who="create_model")
    msg = str(err.value)
    assert "\n" not in msg
    assert 'pip install "attnvision[hub]"' in msg and "pretrained=PATH" in msg
    assert f"https://huggingface.co/{REPO}/resolve/main/w.safetensors" in msg


def test_without_huggingface_hub_a_cfg_with_url_uses_the_url(monkeypatch, tmp_path, torch_hub_dir):
    monkeypatch.setattr(download, "_import_hub", lambda: None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    source = tmp_path / "w-5a5a5a5a.pth"
    source.write_bytes(b"url weights")
    path = fetch_weights({"hf_hub_id": REPO, "url": source.as_uri()}, progress=False)
    assert path == str(torch_hub_dir / "checkpoints" / "w-5a5a5a5a.pth")


# -- the URL route ---------------------------------------------------------------------------

@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_url_download_lands_in_torch_hub_checkpoints_and_is_checked(online, tmp_path, torch_hub_dir):
    data = os.urandom(3000)
    source = tmp_path / "src" / "resnet-0676ba61.pth"
    source.parent.mkdir()
    source.write_bytes(data)
    path = fetch_weights({"url": source.as_uri(), "sha256": sha256(data)}, progress=False)
    assert path == str(torch_hub_dir / "checkpoints" / "resnet-0676ba61.pth")
    with open(path, "rb") as f:
        assert f.read() == data
    assert sorted(os.listdir(torch_hub_dir / "checkpoints")) == ["resnet-0676ba61.pth"]  # no temporary left


def test_url_sha256_prefix_as_torchvision_names_it_is_accepted(online, tmp_path):
    data = b"prefix-checked weights"
    source = tmp_path / "w.pth"
    source.write_bytes(data)
    assert os.path.isfile(fetch_weights({"url": source.as_uri(), "sha256": sha256(data)[:8]}, progress=False))


def test_url_only_cfg_checks_sha256_and_url_sha256_against_the_same_file(online, tmp_path):
    data = b"weights named by both fields"
    source = tmp_path / "w.pth"
    source.write_bytes(data)
    cfg = {"url": source.as_uri(), "sha256": sha256(data), "url_sha256": sha256(data)[:8]}
    assert os.path.isfile(fetch_weights(cfg, progress=False))
    with pytest.raises(ValueError, match="disagree"):
        fetch_weights({"url": source.as_uri(), "sha256": sha256(data), "url_sha256": "00000000"})


def test_url_file_name_in_cfg_names_the_cached_file(online, tmp_path, torch_hub_dir):
    source = tmp_path / "download"
    source.write_bytes(b"weights behind a link without a file name")
    path = fetch_weights({"url": source.as_uri(), "file_name": "eca_resnet50_k3557.pth.tar"}, progress=False)
    assert path == str(torch_hub_dir / "checkpoints" / "eca_resnet50_k3557.pth.tar")


def test_url_download_with_wrong_checksum_keeps_nothing(online, tmp_path, torch_hub_dir):
    source = tmp_path / "w.pth"
    source.write_bytes(b"not the published weights")
    expected = sha256(b"published weights")
    with pytest.raises(ValueError) as err:
        fetch_weights({"url": source.as_uri(), "sha256": expected}, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and expected in msg and sha256(source.read_bytes()) in msg
    assert os.listdir(torch_hub_dir / "checkpoints") == []


def test_url_cached_file_with_wrong_checksum_is_removed(tmp_path, torch_hub_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = torch_hub_dir / "checkpoints" / "w.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"a truncated download")
    with pytest.raises(ValueError) as err:
        fetch_weights({"url": "file:///nonexistent/w.pth", "sha256": sha256(b"whole file")})
    assert str(cached) in str(err.value) and "removed" in str(err.value)
    assert not cached.exists()


def test_url_offline_uses_the_cached_file(tmp_path, torch_hub_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = torch_hub_dir / "checkpoints" / "w.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"cached weights")
    assert fetch_weights({"url": "file:///nonexistent/w.pth", "sha256": sha256(b"cached weights")}) == str(cached)


def test_url_offline_without_cache_is_one_line_with_the_offline_route(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    url = "file:///nonexistent/resnet50-0676ba61.pth"
    with pytest.raises(OSError) as err:
        fetch_weights({"url": url}, who="create_model")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("create_model: ")
    assert url in msg and "pretrained=PATH" in msg


def test_url_unreachable_is_one_line_with_the_offline_route(online, tmp_path, torch_hub_dir):
    url = (tmp_path / "missing.pth").as_uri()
    with pytest.raises(OSError) as err:
        fetch_weights({"url": url}, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and url in msg and "pretrained=PATH" in msg
    assert os.listdir(torch_hub_dir / "checkpoints") == []


def test_url_serving_an_html_page_is_refused(online, tmp_path, torch_hub_dir):
    source = tmp_path / "view"
    source.write_bytes(b"<!DOCTYPE html><html><body>Sign in</body></html>")
    with pytest.raises(ValueError, match="HTML page"):
        fetch_weights({"url": source.as_uri(), "file_name": "w.pth"}, progress=False)
    assert os.listdir(torch_hub_dir / "checkpoints") == []


# -- the description itself ------------------------------------------------------------------

@pytest.mark.parametrize("cfg, error, text", [
    ("resnet50", TypeError, "must be a dict"),
    ({"sha256": "0" * 64}, ValueError, "neither 'hf_hub_id' nor 'url'"),
    ({"url": "file:///x.pth", "sha256": "not-hex"}, ValueError, "8 to 64 hex digits"),
    ({"url": "file:///x.pth", "sha256": "abc"}, ValueError, "8 to 64 hex digits"),
    ({"url": "resnet50.pth"}, ValueError, "absolute URL"),
])
def test_bad_description_is_named(cfg, error, text):
    with pytest.raises(error, match=text):
        fetch_weights(cfg, who="fetch_weights")
