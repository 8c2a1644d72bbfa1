"""The static checks. ``py.typed`` means what it says: mypy finds no error in the package (the settings are
``[tool.mypy]`` in pyproject.toml), so a user's type checker can trust our annotations; and ruff finds nothing in
the repository (pycodestyle errors and warnings, pyflakes: ``[tool.ruff]`` in pyproject.toml)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_error_in_the_package(tmp_path):
    out, err, code = api.run(["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path),
                              "--no-error-summary", str(ROOT / "attnvision")])
    assert code == 0, f"mypy attnvision:\n{out}{err}"
    assert (ROOT / "attnvision" / "py.typed").is_file()


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"ruff check .:\n{done.stdout}{done.stderr}"
