"""Fetching published weights: the Hugging Face Hub or a plain URL, cached, checked against sha256.

``fetch_weights(cfg)`` takes a ``pretrained_cfg``-like dict (timm's field names) and returns
the path of a local file:

- ``hf_hub_id`` (+ ``hf_hub_filename``, default ``model.safetensors``, and optionally
  ``hf_hub_revision``): ``huggingface_hub.hf_hub_download``, so its cache (``HF_HUB_CACHE`` /
  ``HF_HOME``), resumed downloads, tokens and ``HF_HUB_OFFLINE`` behave as they do for the Hub.
  ``huggingface_hub`` is optional (``pip install "attnvision[hub]"``); without it a cfg that
  also has ``url`` uses the URL.
- ``url`` (+ optional ``file_name``, default the URL's last path part): torch's hub cache
  ``torch.hub.get_dir()/checkpoints`` (``TORCH_HOME``), downloaded with
  ``torch.hub.download_url_to_file`` to a temporary name beside it, checked, then renamed, so a
  broken download never sits under the final name. With ``HF_HUB_OFFLINE=1`` or no network a
  file already there is used.

``sha256`` is the digest of the file the cfg names first: the Hub file when there is an
``hf_hub_id``, else the URL's file; ``url_sha256`` is that of the URL's file when both are given
(the Hub's safetensors copy of a ``.pth`` has another hash). Either may be a full digest or, as
torch.hub's ``check_hash`` and torchvision's file names, a prefix of at least 8 hex digits. A
file is checked on download and on its first use from the cache: a file whose hash was confirmed
is remembered by its path, size and modification time under
``torch.hub.get_dir()/attnvision/verified``, so it is not hashed again on every call. A file that
does not match is removed (from the Hub cache: the blob and its snapshot link) and a one-line
``ValueError`` names the file, the expected and the computed hash.

Every failure is one line naming ``who`` (the calling function) and, where the network is the
cause, the offline route: download the file by hand and pass ``pretrained=PATH``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import urllib.error
import urllib.parse
from collections.abc import Mapping

import torch

from ..io import atomic_write_text

DEFAULT_HUB_FILENAME = "model.safetensors"
_HEX = re.compile(r"^[0-9a-fA-F]{8,64}$")
_TRUE = {"1", "on", "yes", "true"}
_HTML_STARTS = (b"<!doctype html", b"<html")


def fetch_weights(cfg: Mapping, *, who: str = "create_model", progress: bool = True) -> str:
    """The local path of the weights ``cfg`` describes, downloaded into the cache if needed.

    Args:
        cfg: ``hf_hub_id`` (+ ``hf_hub_filename``, ``hf_hub_revision``) and/or ``url``
            (+ ``file_name``), optional ``sha256`` and ``url_sha256``; other keys are ignored.
        who: the function named in error messages.
        progress: show torch.hub's progress bar for URL downloads.

    Returns:
        The path of the file (for the Hub: its snapshot path in the Hub cache).
    """
    if not isinstance(cfg, Mapping):
        raise TypeError(f"{who}: the weights description must be a dict with 'hf_hub_id' or 'url', "
                        f"got {type(cfg).__name__}")
    hub_id, url = cfg.get("hf_hub_id"), cfg.get("url")
    if not hub_id and not url:
        raise ValueError(f"{who}: the weights description has neither 'hf_hub_id' nor 'url' "
                         f"(keys: {sorted(cfg)})")
    sha256 = _expected_hash(cfg, "sha256", who)
    url_sha256 = _expected_hash(cfg, "url_sha256", who)
    if not hub_id:  # then both name the URL's file: keep the longer, after checking they agree
        if sha256 and url_sha256 and not (sha256.startswith(url_sha256) or url_sha256.startswith(sha256)):
            raise ValueError(f"{who}: sha256 {sha256} and url_sha256 {url_sha256} disagree for the same file {url!r}")
        url_sha256 = max(sha256 or "", url_sha256 or "", key=len) or None
    if hub_id:
        hub = _import_hub()
        if hub is not None:
            return _fetch_from_hub(hub, cfg, sha256, url_sha256, who)
        if not url:
            filename = cfg.get("hf_hub_filename") or DEFAULT_HUB_FILENAME
            raise ImportError(f"{who}: the weights of {hub_id!r} are on the Hugging Face Hub, which needs "
                              f"huggingface_hub: pip install \"attnvision[hub]\", or download {filename} from "
                              f"{_hub_url(hub_id, filename, cfg.get('hf_hub_revision'))} and pass pretrained=PATH")
    return _fetch_from_url(cfg, url_sha256, who, progress)


# -- checks ----------------------------------------------------------------------------------

def _expected_hash(cfg: Mapping, key: str, who: str) -> str | None:
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not _HEX.match(value):
        raise ValueError(f"{who}: {key} must be 8 to 64 hex digits (a sha256 digest or its prefix), got {value!r}")
    return value.lower()


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _matches(digest: str, expected: str) -> bool:
    return digest.startswith(expected)


def _record_path(path: str) -> str:
    key = hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:32]
    return os.path.join(torch.hub.get_dir(), "attnvision", "verified", key + ".json")


def _stat_key(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _recorded_digest(path: str) -> str | None:
    """The sha256 remembered for ``path`` if the file is unchanged since (same size and mtime)."""
    try:
        with open(_record_path(path), encoding="utf-8") as f:
            record = json.load(f)
        if record.get("path") == os.path.realpath(path) and record.get("stat") == _stat_key(path):
            return record.get("sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return None


def _remember(path: str, digest: str) -> None:
    record = {"path": os.path.realpath(path), "stat": _stat_key(path), "sha256": digest}
    try:
        atomic_write_text(_record_path(path), json.dumps(record))
    except OSError:  # an unwritable torch hub dir only costs one more hashing next time
        pass


def _forget(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(_record_path(path))


def _verify_cached(path: str, expected: str | None, who: str, removal) -> None:
    """Check a cached file once; on a mismatch call ``removal()`` (-> what was done) and raise."""
    if not expected:
        return
    recorded = _recorded_digest(path)
    if recorded is not None and _matches(recorded, expected):
        return
    digest = _sha256(path)
    if _matches(digest, expected):
        _remember(path, digest)
        return
    _forget(path)
    done = removal()
    raise ValueError(f"{who}: {path!r} has sha256 {digest}, expected {expected}; {done}")


def _looks_like_html(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(64).lstrip().lower()
    return head.startswith(_HTML_STARTS)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


# -- Hugging Face Hub ------------------------------------------------------------------------

def _import_hub():
    try:
        import huggingface_hub
    except ImportError:
        return None
    return huggingface_hub


def _hub_url(repo_id: str, filename: str, revision: str | None) -> str:
    return f"https://huggingface.co/{repo_id}/resolve/{revision or 'main'}/{filename}"


def _fetch_from_hub(hub, cfg: Mapping, expected: str | None, url_expected: str | None, who: str) -> str:
    from huggingface_hub import constants

    # huggingface_hub.utils has exported these names since long before .errors existed
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id = cfg["hf_hub_id"]
    filename = cfg.get("hf_hub_filename") or DEFAULT_HUB_FILENAME
    revision = cfg.get("hf_hub_revision")
    where = f"{repo_id}/{filename}" + (f"@{revision}" if revision else "")
    # the environment is read now: huggingface_hub reads HF_HUB_OFFLINE once, when it is imported
    offline = _offline() or bool(constants.HF_HUB_OFFLINE)

    def unreachable(reason: str) -> OSError:
        return OSError(f"{who}: {where} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {reason}: "
                       f"download {filename} from {_hub_url(repo_id, filename, revision)} and pass pretrained=PATH")

    try:
        path = hub.hf_hub_download(repo_id, filename, revision=revision, local_files_only=offline)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        # the same weights under their URL, in torch's cache
        if cfg.get("url") and os.path.isfile(_cached_url_file(cfg)):
            return _fetch_from_url(cfg, url_expected, who, progress=False)
        raise unreachable("offline mode is on (HF_HUB_OFFLINE)" if offline else "the Hub cannot be reached") from None
    except GatedRepoError:
        raise PermissionError(f"{who}: {repo_id!r} is a gated repository on the Hugging Face Hub: accept its terms and "
                              f"log in (huggingface-cli login / HF_TOKEN), or pass pretrained=PATH") from None
    except RepositoryNotFoundError:
        raise ValueError(f"{who}: no repository {repo_id!r} on the Hugging Face Hub (or it is private: log in "
                         f"with huggingface-cli login / HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise ValueError(f"{who}: {repo_id!r} has no revision {revision!r} on the Hugging Face Hub") from None
    except EntryNotFoundError:
        raise ValueError(f"{who}: {repo_id!r} has no file {filename!r} on the Hugging Face Hub") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        raise OSError(f"{who}: the Hugging Face Hub answered HTTP {status} for {where}: try again later, or download "
                      f"{filename} from {_hub_url(repo_id, filename, revision)} and pass pretrained=PATH") from None
    except OSError as e:  # a connection lost during the download (requests' errors are OSErrors), a full disk
        if isinstance(e, (PermissionError, IsADirectoryError, NotADirectoryError)):
            raise
        raise unreachable(f"the download failed "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    _verify_cached(path, expected, who, lambda: _remove_hub_file(path))
    return path


def _remove_hub_file(snapshot_path: str) -> str:
    """Delete a cached Hub file: its blob and the snapshot link to it. Returns what was done."""
    blob = os.path.realpath(snapshot_path)
    try:
        for p in dict.fromkeys((blob, snapshot_path)):  # one path when the cache holds copies, not links
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)
    except OSError as e:
        return (f"it could not be removed ({e.strerror}): delete {snapshot_path!r} and {blob!r} "
                f"(or run huggingface-cli delete-cache), then run again")
    return "the file was removed from the Hugging Face cache: run again to download it anew, or pass pretrained=PATH"


# -- plain URL -------------------------------------------------------------------------------

def _url_file_name(cfg: Mapping) -> str:
    return cfg.get("file_name") or os.path.basename(urllib.parse.urlparse(cfg["url"]).path)


def _cached_url_file(cfg: Mapping) -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", _url_file_name(cfg))


def _fetch_from_url(cfg: Mapping, expected: str | None, who: str, progress: bool) -> str:
    url = cfg["url"]
    if not isinstance(url, str) or not urllib.parse.urlparse(url).scheme:
        raise ValueError(f"{who}: url must be an absolute URL (https://..., file://...), got {url!r}")
    name = _url_file_name(cfg)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"{who}: cannot name the cached file of {url!r} (got {name!r}); give 'file_name' in the cfg")
    path = _cached_url_file(cfg)

    def remove() -> str:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            return f"it could not be removed ({e.strerror}): delete it, then run again"
        return "the file was removed: run again to download it anew, or pass pretrained=PATH"

    if os.path.isfile(path):
        _verify_cached(path, expected, who, remove)
        return path
    if _offline():
        raise OSError(f"{who}: {name} is not in torch's hub cache ({os.path.dirname(path)}) and HF_HUB_OFFLINE is set: "
                      f"download it from {url} and pass pretrained=PATH")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.download"
    try:
        torch.hub.download_url_to_file(url, tmp, progress=progress)
        if _looks_like_html(tmp):
            raise ValueError(f"{who}: {url} served an HTML page, not a weights file (a sign-in or confirmation page?): "
                             f"download it in a browser and pass pretrained=PATH")
        if expected:
            digest = _sha256(tmp)
            if not _matches(digest, expected):
                raise ValueError(f"{who}: the file downloaded from {url} has sha256 {digest}, expected {expected}; "
                                 f"it was not kept")
        os.replace(tmp, path)
    except urllib.error.HTTPError as e:
        raise OSError(f"{who}: {url} answered HTTP {e.code} ({e.reason}): download {name} by hand and pass "
                      f"pretrained=PATH") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise OSError(f"{who}: {url} cannot be reached ({reason}) and {name} is not in torch's hub cache "
                      f"({os.path.dirname(path)}): download it from {url} and pass pretrained=PATH") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    if expected:
        _remember(path, digest)
    return path
