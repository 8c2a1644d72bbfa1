"""Atomic writes: complete files only, with the permissions the umask gives; a refused write leaves the
old file, no temporary one, and one error naming the file."""
from __future__ import annotations

import errno
import os
import pickle
import stat

import pytest

from attnvision.io import FileSystemError, atomic_write, atomic_write_text, remove_temporaries


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_gives_the_umask_permissions_like_open(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with open(tmp_path / "b.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "b.txt").st_mode) == 0o666 & ~umask
    assert (tmp_path / "a.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary_one(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "old")

    def write(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("the writer broke")

    with pytest.raises(RuntimeError, match="the writer broke"):
        atomic_write(tmp_path / "a.txt", write)
    assert os.listdir(tmp_path) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old"


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_a_refused_rename_is_one_error_naming_the_target_not_the_temporary_file(tmp_path, monkeypatch, code):
    atomic_write_text(tmp_path / "a.txt", "old")

    def replace(src, dst):
        raise OSError(code, os.strerror(code), src)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(FileSystemError) as info:
        atomic_write_text(tmp_path / "a.txt", "new")
    e = info.value
    assert isinstance(e, OSError) and e.errno == code and e.filename == str(tmp_path / "a.txt")
    assert str(e) == f"cannot write {str(tmp_path / 'a.txt')!r}: {os.strerror(code)} ({errno.errorcode[code]})"
    assert os.listdir(tmp_path) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old"


def test_file_system_error_crosses_processes_whole():
    e = FileSystemError("write", "/x/run.json", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is FileSystemError and back.errno == errno.ENOSPC and str(back) == str(e)


def test_a_name_of_255_bytes_is_written_though_its_temporary_name_would_be_longer(tmp_path):
    name = "n" * 251 + ".txt"
    atomic_write_text(tmp_path / name, "x")
    assert os.listdir(tmp_path) == [name]



def _torn_write(path) -> str:
    """What a process killed half-way through ``atomic_write(path)`` leaves: its temporary file (kept by a link
    that the writer makes before failing)."""
    def fail(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        os.link(tmp, tmp + ".kept")
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    [kept] = [p for p in os.listdir(os.path.dirname(path)) if p.endswith(".kept")]
    torn = os.path.join(os.path.dirname(path), kept.removesuffix(".kept"))
    os.rename(torn + ".kept", torn)
    return os.path.basename(torn)


def test_remove_temporaries_clears_the_torn_writes_of_the_files_named_only(tmp_path):
    atomic_write_text(tmp_path / "last.state.pt", "complete")
    torn, other = _torn_write(tmp_path / "last.state.pt"), _torn_write(tmp_path / "notes.txt")
    assert remove_temporaries(tmp_path, ["last.state.pt", "metrics.csv"]) == [torn]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other, "last.state.pt"])
    assert (tmp_path / "last.state.pt").read_text() == "complete"
    assert remove_temporaries(tmp_path / "absent", ["last.state.pt"]) == []
