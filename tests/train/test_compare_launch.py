"""Where a comparison's runs train (launchers: local processes, submitit jobs) and what it says meanwhile."""
from __future__ import annotations

import csv
import os
import sys

import pytest

from attnvision.cli.main import main
from attnvision.compare import LAUNCHERS, SubmititLauncher, compare, create_launcher
from attnvision.compare import progress as progress_module
from attnvision.compare import run as compare_run
from attnvision.compare.launchers import Run, _SubmititRun
from attnvision.compare.progress import GridProgress, eta_seconds
from attnvision.compare.run import _train_one
from attnvision.train.config import TrainConfig

TINY = dict(data="synthetic:1x16x16", epochs=1, seeds=1,
            recipe=dict(batch_size=128, lr=0.05, model_kwargs=dict(stem="imagenet"), threads=1))
MODELS = ["resnet20", "resnet20_se"]


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _files(out):
    """Every file under ``out`` with its modification time."""
    return {os.path.join(d, n): os.stat(os.path.join(d, n)).st_mtime_ns for d, _, names in os.walk(out) for n in names}


@pytest.fixture
def no_throughput(monkeypatch):
    """Leave out the throughput measured after training (seconds per model; tested in test_compare.py)."""
    monkeypatch.setattr(compare_run, "_throughputs", lambda *args: {})


@pytest.mark.slow
def test_submitit_local_jobs_train_the_grid_and_a_rerun_trains_nothing(tmp_path, capsys, no_throughput):
    out = tmp_path / "c"
    rows = compare(MODELS, out=str(out), jobs=2, launcher="submitit", launcher_options=dict(cluster="local"), **TINY)
    captured = capsys.readouterr()
    table = _csv(out / "results.csv")
    assert [(r["model"], r["settings"], r["seed"]) for r in table] == [("resnet20", "-", "0"),
                                                                       ("resnet20_se", "-", "0")]
    assert [float(r["val_acc1"]) for r in table] == pytest.approx([r["val_acc1"] for r in rows], abs=1e-4)
    assert int(table[1]["params"]) > int(table[0]["params"])  # SE's gates: each job trained its own model
    # each run was a job of submitit's local executor: its log holds the run's per-epoch line
    logs = [p for p in _files(out / "submitit") if p.endswith("_log.out")]
    assert len(logs) == 2 and all("epoch 1/1  train loss" in open(p).read() for p in logs)
    assert "compare: 2/2 runs" in captured.err and "ETA" in captured.err
    assert "resnet20_se - seed 0: val acc1" in captured.out
    assert "Trained by the submitit launcher" in (out / "results.md").read_text()

    before = _files(out / "runs")
    again = compare(MODELS, out=str(out), jobs=2, launcher="submitit", launcher_options=dict(cluster="local"), **TINY)
    assert _files(out / "runs") == before  # nothing trained, nothing rewritten
    assert len([p for p in _files(out / "submitit") if p.endswith("_log.out")]) == 2  # and no job submitted
    assert [r["val_acc1"] for r in again] == [r["val_acc1"] for r in rows]
    assert "2 runs (2 already done)" in capsys.readouterr().out


def test_a_cut_run_resumes_from_its_last_state_and_finished_ones_are_kept(tmp_path, capsys, no_throughput):
    out = tmp_path / "c"
    compare(["resnet20"], out=str(out), jobs=1, progress=False, **dict(TINY, seeds=2))
    cut, kept = out / "runs" / "resnet20" / "seed0", out / "runs" / "resnet20" / "seed1"
    (cut / "summary.json").unlink()  # as if stopped after its last save
    metrics, kept_files = (cut / "metrics.csv").read_text(), _files(kept)
    capsys.readouterr()
    compare(["resnet20"], out=str(out), jobs=1, progress=False, **dict(TINY, seeds=2))
    printed = capsys.readouterr().out
    assert "2 runs (1 already done)" in printed and "epoch 1/1" not in printed  # resumed after its last epoch
    assert (cut / "summary.json").is_file() and (cut / "metrics.csv").read_text() == metrics
    assert _files(kept) == kept_files


@pytest.mark.slow
def test_parallel_local_runs_show_the_progress_over_the_runs_on_stderr(tmp_path, capfd, no_throughput):
    compare(MODELS, out=str(tmp_path), jobs=2, **TINY)
    captured = capfd.readouterr()  # the spawned processes' output too; stderr is a file: a line per finished run
    assert "compare: 1/2 runs" in captured.err and "compare: 2/2 runs" in captured.err and "\r" not in captured.err
    assert "s/run" in captured.err and "ETA" in captured.err
    assert "epoch 1/1" not in captured.err + captured.out  # the runs draw no bars and print no epoch lines here
    assert "resnet20 - seed 0: val acc1" in captured.out and "resnet20_se - seed 0: val acc1" in captured.out


def test_time_left_plays_the_waiting_runs_into_free_slots():
    # 2 slots, runs of 10 s: one has run 4 s (ends in 6), the other slot is free; 3 wait:
    # 0→10, 6→16, 10→20
    assert eta_seconds(10.0, [4.0], 3, 2) == 20.0
    assert eta_seconds(10.0, [12.0, 3.0], 0, 2) == 7.0  # one is late (counted as ending now)
    assert eta_seconds(5.0, [], 4, 1) == 20.0 and eta_seconds(5.0, [], 0, 3) == 0.0
    with pytest.raises(ValueError, match="eta_seconds: parallel must be a positive integer"):
        eta_seconds(1.0, [], 1, 0)


def test_grid_progress_counts_runs_and_says_the_time_left_from_the_mean_run_time(monkeypatch, capsys):
    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: clock[0])
    runs = [Run(f"r{i}", TrainConfig()) for i in range(3)]
    with GridProgress(4, 1, 2, bar=True, on_finished=lambda run, s: f"  {run.label}: {s['acc']}", tty=True) as watch:
        assert watch.eta() is None
        watch.started(runs[0])
        watch.started(runs[1])
        clock[0] = 110.0
        watch.finished(runs[0], dict(acc=1.5))
        watch.started(runs[2])
        clock[0] = 114.0  # r1 14 s in (late), r2 4 s in: 6 s left by the mean of 10 s
        assert watch.eta() == pytest.approx(6.0)
        watch.tick()
    captured = capsys.readouterr()
    assert captured.out == "  r0: 1.5\n"
    assert "compare: 2/4 runs" in captured.err and "ETA 00:06, 10 s/run" in captured.err


def test_in_a_log_file_each_finished_run_adds_one_progress_line_and_no_bar_is_drawn(monkeypatch, capsys):
    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: clock[0])
    runs = [Run(f"r{i}", TrainConfig()) for i in range(2)]
    with GridProgress(3, 1, 1, bar=True, on_finished=lambda run, s: f"  {run.label} done", tty=False) as watch:
        for run in runs:
            watch.started(run)
            clock[0] += 10.0
            watch.tick()
            watch.finished(run, {})
    captured = capsys.readouterr()
    assert captured.out == "  r0 done\n  r1 done\n"
    assert captured.err == ("compare: 2/3 runs, 00:10 elapsed, ETA 00:10, 10 s/run\n"
                            "compare: 3/3 runs, 00:20 elapsed, ETA 00:00, 10 s/run\n")


def test_without_bars_the_finished_runs_lines_are_still_said(capsys):
    run = Run("r0", TrainConfig())
    with GridProgress(1, 0, 1, bar=False, on_finished=lambda run, s: f"  {run.label} done") as watch:
        watch.started(run)
        watch.finished(run, {})
    captured = capsys.readouterr()
    assert captured.out == "  r0 done\n" and captured.err == ""


def test_without_submitit_the_submitit_launcher_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    out = tmp_path / "c"
    assert main(["compare", "--launcher", "submitit", "--models", "resnet20", "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "attnvision[slurm]"' in err and err.startswith("attnvision compare: ")
    assert not out.exists()
    with pytest.raises(ImportError, match=r'pip install "attnvision\[slurm\]"'):
        compare(["resnet20"], out=str(out), launcher="submitit", **TINY)
    assert not out.exists()


@pytest.mark.parametrize("argv,message", [
    (["--partition", "gpu"], "--partition goes with --launcher submitit"),
    (["--gpus-per-run", "1", "--time-limit", "5"], "--gpus-per-run, --time-limit go with --launcher submitit"),
    (["--launcher", "submitit", "--partition", "gpu"], "partition='gpu' needs SLURM, and submitit found none here"),
    (["--launcher", "submitit", "--gpus-per-run", "-1"], "gpus_per_run must be a non-negative integer, got -1"),
    (["--launcher", "slurm"], "argument --launcher: invalid choice"),
])
def test_launcher_options_that_do_not_fit_are_one_line_errors(tmp_path, capsys, monkeypatch, argv, message):
    import submitit

    monkeypatch.setattr(submitit.AutoExecutor, "which", staticmethod(lambda: "local"))  # as on a machine without SLURM
    out = tmp_path / "c"
    assert main(["compare", "--models", "resnet20", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_launchers_are_plug_ins_of_one_registry():
    assert LAUNCHERS.names() == ["local", "submitit"]
    with pytest.raises(ValueError, match="the local launcher takes no option partition"):
        create_launcher("local", partition="gpu")
    with pytest.raises(ValueError, match="unknown name 'submitt'; did you mean 'submitit'"):
        create_launcher("submitt")
    with pytest.raises(ValueError, match="gpus_per_run=3 must divide evenly among its nodes_per_run=2 nodes"):
        SubmititLauncher(cluster="slurm", gpus_per_run=3, nodes_per_run=2)


def test_slurm_jobs_ask_for_the_run_s_gpus_cores_nodes_and_time(tmp_path, monkeypatch):
    # submitit's SLURM executor looks for srun when it is built; nothing is submitted here
    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{srun.parent}{os.pathsep}{os.environ['PATH']}")
    launcher = SubmititLauncher(cluster="slurm", partition="gpu", gpus_per_run=4, cpus_per_run=16, time_limit=30,
                                nodes_per_run=2, array_parallelism=3)
    script = launcher.executor(str(tmp_path / "logs" / "%j"), 5)._executor._make_submission_file_text("cmd", "uid")
    for line in ("--partition=gpu", "--nodes=2", "--ntasks-per-node=2", "--gpus-per-node=2", "--cpus-per-task=4",
                 "--time=30", "--signal=USR2@90"):
        assert f"#SBATCH {line}\n" in script
    assert launcher.threads(jobs=2) == 4 and launcher.parallel(jobs=2, runs=5) == 3
    assert not launcher.on_this_machine()  # throughput: each run's own, not measured on the login node
    default = SubmititLauncher(cluster="slurm")
    script = default.executor(str(tmp_path / "logs" / "%j"), 5)._executor._make_submission_file_text("cmd", "uid")
    assert "#SBATCH --time=120\n" in script and "#SBATCH --partition" not in script and "gpus" not in script


def test_a_requeued_job_trains_the_same_run_again(tmp_path):
    cfg = TrainConfig(model="resnet20", out=str(tmp_path / "run"))
    job = _SubmititRun(_train_one, cfg)
    again = job.checkpoint()  # what submitit requeues when the job is cut by its time limit or preempted
    assert isinstance(again.function, _SubmititRun) and again.function.cfg == cfg
    assert again.function.train_fn is _train_one and again.args == () and again.kwargs == {}
