"""Shared fixtures: the reference fixtures made from the authors' code (``tests/reference/``), and a fixed seed."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import reference_fixtures

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # one thread per worker: the workers already fill the cores


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return reference_fixtures.REFERENCE_DIR


@pytest.fixture(scope="session")
def load_reference():
    """``load_reference(name)``: the fixture with the authors' weights rebuilt under ``"state_dict"`` (float16)."""
    return reference_fixtures.load
