"""The wheel built from the repository installs into a fresh environment and runs: its version is
``attnvision.__version__`` (written once, in ``attnvision/_version.py``), its metadata carries the SPDX license
and the LICENSE file, its package data (the built-in digits, ``py.typed``) comes along, and the command line lists
the models. Offline: the build uses the installed setuptools and the fresh environment borrows torch from this one."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import attnvision

ROOT = Path(__file__).resolve().parents[1]


def _run(*cmd, cwd):
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_version_is_written_once():
    text = (ROOT / "pyproject.toml").read_text()
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]  # the [project] table (tomllib needs 3.11)
    assert not re.search(r"^version\s*=", project, re.M) and re.search(r'^dynamic = \["version"\]', project, re.M)
    assert 'version = { attr = "attnvision._version.__version__" }' in text
    assert re.search(r'^license = "Apache-2.0"$', project, re.M) and (ROOT / "LICENSE").is_file()


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_environment_and_runs(tmp_path):
    src = tmp_path / "src"  # a copy: the build writes build/ and *.egg-info beside the sources
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "runs",
                                                             "__pycache__", "tests", "benchmarks"))
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp_path / "dist"), str(src), cwd=tmp_path)
    wheel, = (tmp_path / "dist").glob("attnvision-*.whl")
    assert wheel.name.startswith(f"attnvision-{attnvision.__version__}-py3-none-any")
    names = zipfile.ZipFile(wheel).namelist()
    info = f"attnvision-{attnvision.__version__}.dist-info"
    assert {"attnvision/py.typed", "attnvision/data/assets/digits.npz", "attnvision/_timm_cfgs.json",
            f"{info}/licenses/LICENSE"} <= set(names)
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata and "Requires-Dist: Pillow" in metadata

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv), cwd=tmp_path)
    python = venv / "bin" / "python"
    # the venv's python runs this environment's pip, which installs into the venv
    _run(python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel), cwd=tmp_path)
    where = _run(python, "-c", "import attnvision; print(attnvision.__file__, attnvision.__version__)",
                 cwd=tmp_path).split()
    assert Path(where[0]).is_relative_to(venv) and where[1] == attnvision.__version__
    listed = _run(venv / "bin" / "attnvision", "models", "*cbam*", cwd=tmp_path).split()
    assert "resnet50_cbam" in listed and all("cbam" in n for n in listed)
