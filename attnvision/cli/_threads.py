"""How many threads a command runs on: the cores this process may actually use, shared by its jobs.

``os.cpu_count()`` (and PyTorch's default) counts the machine's cores; a process pinned to some of
them (``taskset``, a cpuset) or in a container with a CPU quota (``docker --cpus``, Kubernetes limits:
the cgroup's ``cpu.max``, or ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` under cgroup v1) may use
fewer, and more threads than that only wait on each other.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys

import torch

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"


def add_threads_option(parser, what: str = "torch threads") -> None:
    parser.add_argument("--threads", type=int, help=f"{what} (default: the cores this process may use, from its "
                        f"CPU affinity and cgroup quota, or OMP_NUM_THREADS when set)")


def available_cpus() -> int:
    """The cores this process may run on: its CPU affinity, capped by its cgroup's CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def cgroup_cpu_quota(root: str | None = None, proc_cgroup: str | None = None) -> float | None:
    """The CPUs the cgroup quota of this process allows (the smallest over its cgroup and the ones above
    it), or None when there is none or it cannot be read."""
    root = root or CGROUP_ROOT
    quotas = []
    for line in _read(proc_cgroup or PROC_CGROUP).splitlines():
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and not controllers:  # cgroup v2: one tree
            quotas += [_v2_quota(d) for d in _up(root, path)]
        elif "cpu" in controllers.split(","):  # cgroup v1: the cpu controller's tree
            base = next((b for b in (os.path.join(root, controllers), os.path.join(root, "cpu")) if os.path.isdir(b)),
                        None)
            if base is not None:
                quotas += [_v1_quota(d) for d in _up(base, path)]
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _up(base: str, path: str):
    """``base/path`` and the folders above it up to ``base``, those that exist (inside a container its
    own cgroup is ``base`` itself)."""
    parts = [p for p in path.strip().split("/") if p and p != ".."]
    for i in range(len(parts), -1, -1):
        folder = os.path.join(base, *parts[:i])
        if os.path.isdir(folder):
            yield folder


def _v2_quota(folder: str) -> float | None:
    fields = _read(os.path.join(folder, "cpu.max")).split()  # "max 100000" or "150000 100000"
    try:
        return int(fields[0]) / int(fields[1]) if len(fields) == 2 and fields[0] != "max" else None
    except (ValueError, ZeroDivisionError):
        return None


def _v1_quota(folder: str) -> float | None:
    try:
        quota = int(_read(os.path.join(folder, "cpu.cfs_quota_us")))
        period = int(_read(os.path.join(folder, "cpu.cfs_period_us")))
    except ValueError:  # absent or unreadable
        return None
    return quota / period if quota > 0 and period > 0 else None  # -1: no quota


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, ValueError):
        return ""


def resolve_threads(requested: int | None, who: str, jobs: int = 1, *, warn: bool = True) -> int:
    """Threads for each of ``jobs`` parallel runs of command ``who``: ``requested``, or OMP_NUM_THREADS
    when set, or the available cores divided among the jobs. ``warn``: say on stderr, in one line, when
    the machine is busier than those cores."""
    if requested is not None and requested < 1:
        raise ValueError(f"{who}: --threads must be at least 1, got {requested}")
    cores = available_cpus()
    if warn:
        warn_if_busy(who, cores)
    if requested is not None:
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, cores // max(1, jobs))


def warn_if_busy(who: str, cores: int) -> None:
    """One line on stderr when the 1-minute load average is above ``cores``: other work competes for the
    cores, and speeds measured now are low and noisy."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on this platform
        return
    if load > cores:
        print(f"attnvision {who}: warning: the 1-minute load average is {load:.1f} with {cores} core(s) available "
              f"to this process: other work competes for them (runs are slower, timings noisy)", file=sys.stderr)


@contextlib.contextmanager
def torch_threads(n: int):
    """PyTorch on ``n`` threads inside the block, as it was after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
