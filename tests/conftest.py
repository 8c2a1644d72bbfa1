"""Shared fixtures: the reference fixtures made from the authors' code (``tests/reference/``), a fixed seed
and a machine that is not busy."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import reference_fixtures

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # one thread per worker: the workers already fill the cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # and the commands' default (attnvision.cli._threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _quiet_machine(monkeypatch):
    """The commands warn on stderr when the load average is above the cores; the tests read stderr, so
    they run on a machine that is never busy (tests/cli/test_cli_threads.py sets the load it needs)."""
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return reference_fixtures.REFERENCE_DIR


@pytest.fixture(scope="session")
def load_reference():
    """``load_reference(name)``: the fixture with the authors' weights rebuilt under ``"state_dict"`` (float16)."""
    return reference_fixtures.load
