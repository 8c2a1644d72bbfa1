"""The training checkpoint writers report a full disk as an ``OSError`` with its errno (torch.save and
safetensors would say ``RuntimeError: unexpected pos`` / ``SafetensorError``), keep the previous file
and leave no temporary file."""
from __future__ import annotations

import builtins
import errno
import os

import pytest
import torch
from safetensors.torch import load_file

from attnvision import io
from attnvision.train import checkpoints
from attnvision.train.checkpoints import load_state, save_state, save_weights


class _FullDisk:
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def _disk_full_after(monkeypatch, module, room: int):
    def full_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        return _FullDisk(f, room) if "w" in mode else f
    monkeypatch.setattr(module, "open", full_open, raising=False)


def test_save_state_on_a_full_disk_is_an_oserror_and_keeps_the_last_state(tmp_path, monkeypatch):
    path = tmp_path / "last.state.pt"
    save_state(path, {"recipe": {}, "w": torch.ones(3)})
    _disk_full_after(monkeypatch, checkpoints, room=1000)
    with pytest.raises(OSError) as info:
        save_state(path, {"recipe": {}, "w": torch.zeros(10_000)})
    assert info.value.errno == errno.ENOSPC and repr(str(path)) in str(info.value)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["last.state.pt"] and torch.equal(load_state(path)["w"], torch.ones(3))


def test_save_weights_on_a_full_disk_is_an_oserror_and_keeps_the_last_weights(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    save_weights(path, {"w": torch.ones(3)})
    _disk_full_after(monkeypatch, io, room=100)
    with pytest.raises(OSError) as info:
        save_weights(path, {"w": torch.zeros(10_000)})
    assert info.value.errno == errno.ENOSPC and repr(str(path)) in str(info.value)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["last.safetensors"] and torch.equal(load_file(path)["w"], torch.ones(3))
