"""Elastic runs: under ``torchrun --max-restarts 1`` a process killed mid-epoch makes torchrun restart the group,
which continues from the last saved state by itself and ends with the weights of the run never interrupted (two
gloo processes on CPU, real torchrun)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import attnvision

ROOT = Path(attnvision.__file__).resolve().parents[1]
# 16 steps an epoch of 32 images (16 a process), the state saved every 4 steps
RUN = ["--model", "resnet20", "--data", "synthetic:1x8x8", "--epochs", "2", "--batch-size", "32", "--lr", "0.05",
       "--deterministic", "--threads", "1", "--no-progress", "--device", "cpu", "--save-every-steps", "4"]
KILL_AT = 23  # epoch 2, three steps after the state saved at step 20

# `attnvision train ARGS` as torchrun starts it; with STEP > 0, rank 1 of the first attempt SIGKILLs itself after
# optimiser step STEP
DRIVER = """
import os, signal, sys
from attnvision.cli import train as cli_train
from attnvision.cli.main import main

step, train = int(sys.argv[1]), cli_train.train

def on_step(global_step):
    if (global_step == step and os.environ["RANK"] == "1" and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0"):
        os.kill(os.getpid(), signal.SIGKILL)

cli_train.train = lambda cfg: train(cfg, on_step=on_step)
sys.exit(main(["train", *sys.argv[2:]]))
"""


def _torchrun(tmp_path, out: Path, kill_at: int, restarts: int) -> subprocess.Popen:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--max-restarts",
           str(restarts), str(driver), str(kill_at), *RUN, "--out", str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_a_killed_process_restarts_the_group_which_continues_to_the_uninterrupted_weights(tmp_path):
    jobs = {name: _torchrun(tmp_path, tmp_path / name, kill_at, restarts)  # both at once: 2 cores
            for name, kill_at, restarts in (("full", 0, 0), ("cut", KILL_AT, 1))}
    logs = {name: job.communicate(timeout=400)[0] for name, job in jobs.items()}
    for name, job in jobs.items():
        assert job.returncode == 0, logs[name]
    assert "restarted by torchrun (restart 1): continuing the run in" in logs["cut"]
    assert "restarted by torchrun" not in logs["full"]
    a, b = load_file(tmp_path / "full" / "last.safetensors"), load_file(tmp_path / "cut" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
