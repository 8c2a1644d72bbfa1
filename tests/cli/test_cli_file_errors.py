"""A file system that refuses a write (read-only, no permission, full) ends every writing command in one
line naming the file and what failed, exit 2, with the files already there unchanged and no temporary
file left behind.

The tests run as root, whom ``chmod`` does not stop, so the refusal is injected where the operating
system would raise it, for paths under the test's folder only: creating the temporary file (a read-only
folder), renaming it over the target (no permission) or flushing it to disk (a full disk).
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tempfile

import pytest
import torch
from PIL import Image

from attnvision.cli.main import main

RUN = ["--model", "resnet20", "--model-kwargs", '{"stem": "imagenet"}', "--data", "digits", "--batch-size", "64",
       "--threads", "1", "--no-progress"]

FAILURES = {  # where the write fails, and the errno the operating system gives there
    "read-only": ("create", errno.EROFS),
    "no-permission": ("rename", errno.EACCES),
    "disk-full": ("fsync", errno.ENOSPC),
}


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", *RUN, "--epochs", "1", "--out", str(out)]) == 0
    return out


def refuse_writes(monkeypatch, root, failure: str) -> None:
    """Make the file system refuse writes under ``root`` as ``failure`` (a key of FAILURES) says."""
    where, code = FAILURES[failure]
    root = os.path.abspath(root)

    def under(path) -> bool:
        return os.path.abspath(os.fspath(path)).startswith(root + os.sep)

    def refused(path):
        return OSError(code, os.strerror(code), os.fspath(path))

    if where == "create":
        real_mkstemp, real_mkdtemp = tempfile.mkstemp, tempfile.mkdtemp

        def mkstemp(suffix=None, prefix=None, dir=None, text=False):
            if dir is not None and (under(dir) or os.path.abspath(dir) == root):
                raise refused(os.path.join(dir, f"{prefix}XXXXXXXX{suffix}"))
            return real_mkstemp(suffix, prefix, dir, text)

        def mkdtemp(suffix=None, prefix=None, dir=None):
            if dir is not None and (under(dir) or os.path.abspath(dir) == root):
                raise refused(os.path.join(dir, f"{prefix}XXXXXXXX"))
            return real_mkdtemp(suffix, prefix, dir)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    elif where == "rename":
        real_replace = os.replace

        def replace(src, dst, **kw):
            if under(dst):
                raise refused(src)
            return real_replace(src, dst, **kw)

        monkeypatch.setattr(os, "replace", replace)
    else:
        real_fsync = os.fsync

        def fsync(fd):
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and any(os.path.samestat(st, os.stat(p)) for p in _files(root)):
                raise OSError(code, os.strerror(code))
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)


def _files(root) -> list[str]:
    return [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]


def snapshot(root) -> dict:
    """Every file under ``root``, hidden ones included, with its bytes."""
    return {os.path.relpath(p, root): open(p, "rb").read() for p in _files(root)}


def error_line(err: str, command: str, path, failure: str) -> str:
    """The one line said on stderr (a progress bar may have been drawn before it, with carriage returns)."""
    assert "Traceback" not in err and err.endswith("\n")
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    errors = [line for line in lines if line.startswith("attnvision")]
    assert len(errors) == 1 and errors[0] == lines[-1], err
    line = errors[0]
    code = FAILURES[failure][1]
    assert line.startswith(f"attnvision {command}: error: cannot ")
    assert repr(os.fspath(path)) in line and os.strerror(code) in line and errno.errorcode[code] in line
    return line


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_train_into_a_refusing_folder_says_so_in_one_line(tmp_path, monkeypatch, capsys, failure):
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    refuse_writes(monkeypatch, folder, failure)
    rc = main(["train", *RUN, "--epochs", "1", "--out", str(folder / "r")])
    assert rc == 2
    error_line(capsys.readouterr().err, "train", folder / "r" / "run.json", failure)
    assert snapshot(folder) == {"notes.txt": b"mine"}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_resume_in_a_refusing_folder_keeps_the_run(one_epoch, tmp_path, monkeypatch, capsys, failure):
    out = shutil.copytree(one_epoch, tmp_path / "r")
    before = snapshot(out)
    refuse_writes(monkeypatch, out, failure)
    rc = main(["train", "--resume", str(out), "--epochs", "2", "--threads", "1", "--no-progress"])
    assert rc == 2
    error_line(capsys.readouterr().err, "train", out / "run.json", failure)
    assert snapshot(out) == before


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_overwrite_in_a_refusing_folder_keeps_the_old_run(one_epoch, tmp_path, monkeypatch, capsys, failure):
    out = shutil.copytree(one_epoch, tmp_path / "r")
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    refuse_writes(monkeypatch, out, failure)
    rc = main(["train", *RUN, "--model", "resnet20_se", "--epochs", "1", "--out", str(out), "--overwrite"])
    assert rc == 2
    # a read-only folder refuses the hidden folder the old run would be set aside in
    error_line(capsys.readouterr().err, "train", out if failure == "read-only" else out / "run.json", failure)
    assert snapshot(out) == before
    assert sorted(os.listdir(out)) == sorted(before)  # no hidden folder left either


def test_overwrite_that_succeeds_leaves_only_the_new_run(one_epoch, tmp_path):
    out = shutil.copytree(one_epoch, tmp_path / "r")
    (out / "eval.json").write_text("{}")
    assert main(["train", *RUN, "--model", "resnet20_se", "--epochs", "1", "--out", str(out), "--overwrite"]) == 0
    assert not (out / "eval.json").exists()
    assert not [name for name in os.listdir(out) if name.startswith(".")]  # the old run's folder is gone


def test_eval_prints_its_results_then_one_line_when_eval_json_is_refused(one_epoch, tmp_path, monkeypatch, capsys):
    out = shutil.copytree(one_epoch, tmp_path / "r")
    (out / "eval.json").write_text('{"earlier": true}')
    before = snapshot(out)
    refuse_writes(monkeypatch, out, "disk-full")
    assert main(["eval", "--run", str(out)]) == 2
    captured = capsys.readouterr()
    assert "top-1 " in captured.out and "wrote" not in captured.out
    error_line(captured.err, "eval", out / "eval.json", "disk-full")
    assert snapshot(out) == before


def test_cam_out_in_a_refusing_folder(tmp_path, monkeypatch, capsys):
    image = tmp_path / "digit.png"
    Image.fromarray(torch.zeros(32, 32, 3, dtype=torch.uint8).numpy()).save(image)
    folder = tmp_path / "figs"
    folder.mkdir()
    (folder / "cam.png").write_bytes(b"an earlier figure")
    refuse_writes(monkeypatch, folder, "no-permission")
    rc = main(["cam", "--model", "resnet20", "--num-classes", "10", "--image", str(image), "--input-size", "32", "32",
               "--out", str(folder / "cam.png"), "--dpi", "20"])
    assert rc == 2
    error_line(capsys.readouterr().err, "cam", folder / "cam.png", "no-permission")
    assert snapshot(folder) == {"cam.png": b"an earlier figure"}


def test_compare_in_a_refusing_folder(tmp_path, monkeypatch, capsys):
    out = tmp_path / "compare"
    out.mkdir()
    (out / "results.csv").write_text("earlier results\n")
    refuse_writes(monkeypatch, out, "read-only")
    rc = main(["compare", "--models", "resnet20", "--epochs", "1", "--seeds", "1", "--jobs", "1", "--threads", "1",
               "--batch-size", "64", "--out", str(out)])
    assert rc == 2
    error_line(capsys.readouterr().err, "compare", out / "runs" / "resnet20" / "seed0" / "run.json", "read-only")
    assert snapshot(out) == {"results.csv": b"earlier results\n"}


def test_benchmark_csv_in_a_refusing_folder(tmp_path, monkeypatch, capsys):
    csv = tmp_path / "bench.csv"
    csv.write_text("earlier\n")
    refuse_writes(monkeypatch, tmp_path, "disk-full")
    rc = main(["benchmark", "resnet20", "--no-train", "--repeats", "1", "--batch-size", "1", "--input-size", "3", "16",
               "16", "--num-classes", "10", "--threads", "1", "--csv", str(csv)])
    assert rc == 2
    error_line(capsys.readouterr().err, "benchmark", csv, "disk-full")
    assert snapshot(tmp_path) == {"bench.csv": b"earlier\n"}
