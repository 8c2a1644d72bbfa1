"""``kill -9`` at any moment, a checkpoint write included, leaves a run that ``--resume`` finishes with the weights of
the run never interrupted, bit for bit (``--deterministic``, on CPU): real processes, really killed."""
from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import attnvision

ROOT = Path(attnvision.__file__).resolve().parents[1]
# resnet20 on 8×8 noise: 16 steps an epoch, a state saved every 2 of them; dropout and stochastic depth draw
# from the global generator, whose state has to be restored too
RUN = ["--model", "resnet20", "--model-kwargs", '{"drop_rate": 0.2, "drop_path_rate": 0.1}', "--data",
       "synthetic:1x8x8", "--epochs", "2", "--batch-size", "32", "--lr", "0.05", "--deterministic", "--threads", "1",
       "--save-every-steps", "2"]
RESUME = ["--threads", "1", "--no-progress"]

# `attnvision train ARGS`; with N > 0 it SIGKILLs itself half-way through its N-th write of last.state.pt
DRIVER = """
import os, signal, sys
from attnvision.cli.main import main
from attnvision.train import checkpoints

n, writes, original = int(sys.argv[1]), [], checkpoints.atomic_write

def dying(path, write):
    writes.append(path)
    if len(writes) < n:
        return original(path, write)

    def half_then_die(tmp):
        write(tmp)
        os.truncate(tmp, os.path.getsize(tmp) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    original(path, half_then_die)

if n:
    checkpoints.atomic_write = dying
sys.exit(main(["train", *sys.argv[2:]]))
"""


def _start(args, die_writing_state: int = 0) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(die_writing_state), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> int:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, -signal.SIGKILL), err
    return proc.returncode


def _state_id(path: Path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _kill_after_saves(proc: subprocess.Popen, state: Path, saves: int, delay: float) -> None:
    """SIGKILL ``proc`` ``delay`` seconds after it has written ``saves`` new training states."""
    seen, last = 0, _state_id(state)
    while seen < saves:
        assert proc.poll() is None, proc.communicate()[1]
        now = _state_id(state)
        if now != last:
            seen, last = seen + 1, now
        time.sleep(0.002)
    time.sleep(delay)
    assert proc.poll() is None  # still training: the kill lands in the middle of the run
    proc.send_signal(signal.SIGKILL)
    assert _finish(proc) == -signal.SIGKILL


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return [{k: r[k] for k in ("epoch", "train_loss", "train_acc1", "val_loss", "val_acc1")}
                for r in csv.DictReader(f)]


@pytest.mark.slow
def test_a_run_killed_anywhere_resumes_to_the_weights_of_the_uninterrupted_run(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    state = cut / "last.state.pt"
    uninterrupted = _start([*RUN, "--no-progress", "--out", str(full)])  # alongside: the machine has 2 cores
    rng = random.Random(0)

    # killed half-way through writing its first state: nothing to continue, --resume starts the run again
    assert _finish(_start([*RUN, "--no-progress", "--out", str(cut)], die_writing_state=1)) == -signal.SIGKILL
    assert not state.exists() and any(p.name.endswith(".tmp") for p in cut.iterdir())
    # then resumed and killed three times: at random moments after 1 to 4 new states, and half-way through
    # writing the second state of its run
    for die_writing_state in (0, 2, 0):
        proc = _start(["--resume", str(cut), *RESUME], die_writing_state)
        if die_writing_state:
            assert _finish(proc) == -signal.SIGKILL
        else:
            _kill_after_saves(proc, state, saves=rng.randint(1, 4), delay=rng.uniform(0.0, 0.05))
    assert _finish(_start(["--resume", str(cut), *RESUME])) == 0
    assert _finish(uninterrupted) == 0

    a, b = load_file(full / "last.safetensors"), load_file(cut / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(cut) == _rows(full)
    assert not [p.name for p in cut.iterdir() if p.name.endswith(".tmp")]  # the torn writes were cleared


def test_sigterm_saves_the_current_step_and_the_run_resumes_to_the_uninterrupted_weights(tmp_path):
    """``kill PID`` (and a cluster preempting the job) is taken like Ctrl-C: the step ends, the state is saved at
    that batch, run.json says ``interrupted``, the exit code is 128 + 15; ``--resume`` then ends on the weights
    of the run never stopped."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    uninterrupted = _start([*RUN, "--no-progress", "--out", str(full)])
    proc = _start([*RUN, "--no-progress", "--out", str(cut)])
    state = cut / "last.state.pt"
    while _state_id(state) is None:  # the first save: training is under way
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "train: SIGTERM: stopping at the end of the current step" in err and "Traceback" not in err
    assert json.loads((cut / "run.json").read_text())["status"] == "interrupted"
    assert _finish(_start(["--resume", str(cut), *RESUME])) == 0
    assert _finish(uninterrupted) == 0
    a, b = load_file(full / "last.safetensors"), load_file(cut / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
