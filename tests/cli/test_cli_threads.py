"""Threads: the cores a process may use (affinity, cgroup v2 and v1 quotas), divided among parallel jobs,
one ``--threads`` for every command that computes, and a one-line warning on a busy machine."""
from __future__ import annotations

import os

import pytest
import torch

from attnvision.cli import _threads, cam, profile
from attnvision.cli import benchmark as benchmark_cli
from attnvision.cli import compare as compare_cli
from attnvision.cli import eval as eval_cli
from attnvision.cli import train as train_cli
from attnvision.cli._threads import available_cpus, cgroup_cpu_quota, resolve_threads
from attnvision.cli.main import main


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """``machine(cores, load=0.0)``: a process allowed ``cores`` CPUs by its affinity, no cgroup quota,
    no OMP_NUM_THREADS, and that 1-minute load average; returns the cgroup root to fill."""
    root = tmp_path / "cgroup"
    root.mkdir()
    monkeypatch.setattr(_threads, "CGROUP_ROOT", str(root))
    monkeypatch.setattr(_threads, "PROC_CGROUP", str(tmp_path / "proc_self_cgroup"))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)

    def set_machine(cores: int, load: float = 0.0):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
        return root
    return set_machine


def _cgroup(root, proc, lines: str, files: dict) -> None:
    proc.write_text(lines)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_affinity_counts_the_cores_a_pinned_process_may_use(machine):
    machine(3)
    assert available_cpus() == 3 and cgroup_cpu_quota() is None


def test_cgroup_v2_quota_is_the_smallest_on_the_path_rounded_up(machine, tmp_path):
    root = machine(8)
    _cgroup(root, tmp_path / "proc_self_cgroup", "0::/user.slice/job\n", {
        "cpu.max": "400000 100000\n", "user.slice/cpu.max": "max 100000\n",
        "user.slice/job/cpu.max": "150000 100000\n"})
    assert cgroup_cpu_quota() == pytest.approx(1.5)
    assert available_cpus() == 2


def test_cgroup_v2_without_quota_leaves_the_affinity(machine, tmp_path):
    root = machine(6)
    _cgroup(root, tmp_path / "proc_self_cgroup", "0::/\n", {"cpu.max": "max 100000\n"})
    assert cgroup_cpu_quota() is None and available_cpus() == 6


def test_cgroup_v1_quota_inside_a_container_is_read_from_its_own_cgroup(machine, tmp_path):
    root = machine(16)
    # the container sees its host's path in /proc/self/cgroup, and its own cgroup mounted at the root
    _cgroup(root, tmp_path / "proc_self_cgroup", "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n", {
        "cpu,cpuacct/cpu.cfs_quota_us": "250000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_quota() == pytest.approx(2.5) and available_cpus() == 3


def test_cgroup_v1_quota_of_minus_one_is_no_quota(machine, tmp_path):
    root = machine(4)
    _cgroup(root, tmp_path / "proc_self_cgroup", "4:cpu:/\n", {
        "cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_quota() is None and available_cpus() == 4


def test_a_quota_below_one_cpu_still_gives_one_thread(machine, tmp_path):
    root = machine(4)
    _cgroup(root, tmp_path / "proc_self_cgroup", "0::/\n", {"cpu.max": "20000 100000\n"})
    assert available_cpus() == 1


def test_jobs_divide_the_cores_and_the_choices_given_win(machine, monkeypatch):
    machine(8)
    assert [resolve_threads(None, "t", jobs) for jobs in (1, 2, 3, 16)] == [8, 4, 2, 1]
    assert resolve_threads(3, "t", jobs=4) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert resolve_threads(None, "t") == 5
    with pytest.raises(ValueError, match="t: --threads must be at least 1, got 0"):
        resolve_threads(0, "t")


def test_a_load_above_the_available_cores_is_one_warning_line(machine, capsys):
    machine(2, load=3.5)
    resolve_threads(None, "eval")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("attnvision eval: warning: the 1-minute load average is 3.5 with 2")
    machine(2, load=1.9)
    resolve_threads(None, "eval")
    assert capsys.readouterr().err == ""


def test_profile_does_not_warn_about_the_load(machine, capsys):
    machine(2, load=3.5)
    assert main(["profile", "resnet20", "--json"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("module, argv", [
    (eval_cli, ["eval"]), (cam, ["cam", "--image", "x.png"]), (profile, ["profile", "resnet20"])])
def test_eval_cam_and_profile_run_on_the_threads_chosen(machine, monkeypatch, module, argv):
    machine(5)
    seen = []
    monkeypatch.setattr(module, "_run", lambda args: seen.append(torch.get_num_threads()) or 0)
    before = torch.get_num_threads()
    assert main(argv) == 0 and main([*argv, "--threads", "2"]) == 0
    assert seen == [5, 2] and torch.get_num_threads() == before


def _stop_train(monkeypatch, seen):
    def train(cfg):
        seen.append(cfg.threads)
        return {"interrupted": True}
    monkeypatch.setattr(train_cli, "train", train)


def test_train_divides_the_cores_among_the_processes_torchrun_started(machine, monkeypatch, tmp_path):
    machine(8)
    seen = []
    _stop_train(monkeypatch, seen)
    argv = ["train", "--model", "resnet20", "--epochs", "1", "--out", str(tmp_path / "r")]
    assert main(argv) == 130
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert main(argv) == 130 and main([*argv, "--threads", "3"]) == 130
    assert seen == [8, 2, 3]


def test_compare_divides_the_cores_among_its_jobs(machine, monkeypatch, tmp_path):
    machine(4)
    seen = []

    def compare(models, sets, *, recipe, jobs, **kw):
        seen.append((jobs, recipe["threads"]))
        return []
    monkeypatch.setattr(compare_cli, "compare", compare)
    for jobs in ([], ["--jobs", "1"], ["--jobs", "3"], ["--jobs", "8"]):
        assert main(["compare", "--out", str(tmp_path), *jobs]) == 130
    assert seen == [(2, 2), (1, 4), (3, 1), (8, 1)]


def test_benchmark_runs_on_the_available_cores(machine, monkeypatch):
    machine(3)
    seen = []

    def benchmark(names, *, threads, **kw):
        seen.append(threads)
        raise ValueError("benchmark: stopped here")
    monkeypatch.setattr(benchmark_cli, "benchmark", benchmark)
    assert main(["benchmark", "resnet20"]) == 2 and main(["benchmark", "resnet20", "--threads", "1"]) == 2
    assert seen == [3, 1]
