"""Damaged or wrong checkpoint files end in one clear error; unpickling is never suggested."""
from __future__ import annotations

import argparse
import collections
import random

import pytest
import torch

from attnvision import load_checkpoint
from attnvision.train.checkpoints import load_state, save_state
from torch import nn


def _tiny():
    return nn.Linear(4, 2)


def _write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


def _damaged_files(tmp_path):
    torch.save({"w": torch.ones(256)}, tmp_path / "good.pt")
    whole = (tmp_path / "good.pt").read_bytes()
    return {
        "random.safetensors": _write(tmp_path / "random.safetensors", random.Random(0).randbytes(4096)),
        "random.pt": _write(tmp_path / "random.pt", random.Random(1).randbytes(4096)),
        "truncated.pt": _write(tmp_path / "truncated.pt", whole[: len(whole) // 2]),
        "empty.pt": _write(tmp_path / "empty.pt", b""),
    }


@pytest.mark.parametrize("name, reason", [
    ("random.safetensors", "is not a valid safetensors file"),
    ("random.pt", "it is not a torch file of tensors (refused: unpickling anything else could run code)"),
    ("truncated.pt", "it is truncated or damaged"),
    ("empty.pt", "it is truncated or damaged"),
])
def test_damaged_checkpoint_is_one_value_error_without_unsafe_advice(tmp_path, name, reason):
    path = _damaged_files(tmp_path)[name]
    with pytest.raises(ValueError) as info:
        load_checkpoint(_tiny(), path)
    message = str(info.value)
    assert message.startswith("load_checkpoint: ") and repr(path) in message and reason in message
    assert "weights_only" not in message and "\n" not in message


def test_a_pickle_of_arbitrary_objects_is_refused(tmp_path):
    torch.save({"w": torch.ones(3), "obj": argparse.Namespace(a=1)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused: unpickling anything else could run code"):
        load_checkpoint(_tiny(), str(tmp_path / "evil.pt"))


def test_a_training_state_given_as_weights_points_to_last_safetensors(tmp_path):
    save_state(tmp_path / "last.state.pt", dict(recipe={}, model=_tiny().state_dict(), optimizer={},
                                                running=torch.zeros(3), rows=collections.OrderedDict()))
    with pytest.raises(ValueError, match=r"is a training state \(for `train --resume`\), not weights; load "
                       r".*last\.safetensors' instead"):
        load_checkpoint(_tiny(), str(tmp_path / "last.state.pt"))


def test_a_damaged_training_state_refuses_to_resume_and_says_how_to_start_again(tmp_path):
    path = _damaged_files(tmp_path)["truncated.pt"]
    with pytest.raises(ValueError, match=r"train: cannot resume: .* is not a valid training state: it is truncated "
                       r"or damaged .*; start the run again with --overwrite"):
        load_state(path)


@pytest.mark.parametrize("seed", range(40))
def test_any_random_bytes_as_a_torch_file_end_in_the_one_clear_error(tmp_path, seed):
    path = _write(tmp_path / "noise.pt", random.Random(seed).randbytes(4096))
    with pytest.raises(ValueError, match=r"is not a valid checkpoint: it is (not a torch file|truncated or damaged)"):
        load_checkpoint(_tiny(), path)
