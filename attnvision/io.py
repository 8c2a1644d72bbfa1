"""Atomic file writing: a crash never leaves a half-written file behind.

The temporary file is created private (``mkstemp`` makes it 0600); once complete it gets the
permissions an ordinary ``open(path, "w")`` would give, ``0o666 & ~umask``, before the rename.
Whatever fails (a read-only folder, a full disk, a name too long, an exception of the writer), the
temporary file is removed and the file at ``path`` is the one that was there before. Only a process
killed outright leaves its temporary file (``.NAME.XXXX.tmp``); :func:`remove_temporaries` clears them.

An ``OSError`` of the file system leaves here as :class:`FileSystemError`: one line saying what was
being done, to which path (the file asked for, not the temporary one) and why, with its ``errno``.
"""
from __future__ import annotations

import contextlib
import errno as errno_codes
import json
import os
import tempfile
from typing import Callable


class FileSystemError(OSError):
    """An ``OSError`` said in one line: the operation, the path and the reason (``errno`` kept)."""

    def __init__(self, operation: str, path, error: OSError):
        super().__init__(error.errno, error.strerror or str(error), os.fspath(path))
        self.operation = operation

    def __str__(self) -> str:
        code = errno_codes.errorcode.get(self.errno, "") if self.errno is not None else ""
        return f"cannot {self.operation} {self.filename!r}: {self.strerror}" + (f" ({code})" if code else "")

    def __reduce__(self):  # crosses process boundaries (compare --jobs) whole
        return type(self), (self.operation, self.filename, OSError(self.errno, self.strerror))


@contextlib.contextmanager
def file_operation(operation: str, path):
    """Turn an ``OSError`` of the block into a :class:`FileSystemError` naming ``operation`` and ``path``."""
    try:
        yield
    except FileSystemError:
        raise
    except OSError as e:
        raise FileSystemError(operation, path, e) from e


def atomic_write(path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    with file_operation("create the folder", directory):
        os.makedirs(directory, exist_ok=True)
    prefix = _temporary_prefix(os.path.basename(path))
    with file_operation("write", path):
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
        try:
            os.close(fd)
            write(tmp)
            os.chmod(tmp, 0o666 & ~_umask())
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):  # the error to report is the first one
                os.remove(tmp)
            raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _temporary_prefix(name: str) -> str:
    return f".{name[:200]}."  # a name of 255 bytes is legal: the temporary one must not be longer


def remove_temporaries(directory, names) -> list[str]:
    """Remove the temporary files that :func:`atomic_write` calls killed half-way (``kill -9``, a power cut)
    left in ``directory`` for the files ``names``; only call it while nothing else writes those files.
    Returns the names removed."""
    if not os.path.isdir(directory):
        return []
    prefixes = tuple(_temporary_prefix(n) for n in names)
    with file_operation("list", directory):
        found = sorted(e for e in os.listdir(directory) if e.startswith(prefixes) and e.endswith(".tmp"))
    for entry in found:
        path = os.path.join(directory, entry)
        with file_operation("remove the temporary file", path), contextlib.suppress(FileNotFoundError):
            os.remove(path)
    return found


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def atomic_write_text(path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    atomic_write(path, write)


def atomic_write_bytes(path, data: bytes) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
    atomic_write(path, write)


def read_json(path, who: str):
    """The JSON document in ``path``; a damaged file is one ``ValueError`` naming ``who`` and the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{who}: {str(path)!r} is damaged ({e})") from None
