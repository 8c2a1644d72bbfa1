"""Where a comparison's runs train: launchers, the plug-ins of :data:`LAUNCHERS`.

- ``local``: on this machine, one run at a time in this process, or ``jobs`` at once in spawned processes.
- ``submitit``: submitit's ``AutoExecutor`` (``pip install "attnvision[slurm]"``). On a SLURM cluster every
  run is a job of one job array (``partition``, ``gpus_per_run``, ``cpus_per_run``, ``time_limit`` in
  minutes, ``nodes_per_run``, ``array_parallelism``); a run given several GPUs or nodes trains with one
  process per GPU, joined by the variables torchrun would set (``MASTER_ADDR``, ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``), which ``submitit.helpers.TorchDistributedEnvironment`` exports in each task. A job cut by
  its time limit or preempted is requeued (at most three times) and resumes from the run's
  ``last.state.pt``. Where there is no SLURM, submitit's local executor runs the jobs on this machine
  (``cluster="local"``), or ``cluster="debug"`` in this process, one after the other. Logs: ``OUT/submitit/``.

A launcher trains every run it is given by calling ``train_fn(cfg) -> summary`` wherever it runs them,
and tells a ``watch`` when each run starts and ends; :func:`attnvision.compare.compare` then reads the
results from each run's ``summary.json``, whichever launcher trained it. A new launcher is a class whose
keyword arguments are its options, registered with ``LAUNCHERS.register("name", TheClass)``.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol

from ..registry import Registry
from ..train.config import TrainConfig

SLURM_INSTALL = 'pip install "attnvision[slurm]"'
DEFAULT_SLURM_MINUTES = 120
_NO_LIMIT_MINUTES = 60 * 24 * 30  # submitit's local executor stops a job at its time limit: none in practice
_POLL_S = 0.5


@dataclass(frozen=True, eq=False)
class Run:
    """One run of the grid: what it is called in messages, and its configuration (``cfg.out`` its folder)."""

    label: str
    cfg: TrainConfig


class Watch(Protocol):
    """What a launcher tells while it trains (:class:`attnvision.compare.progress.GridProgress`)."""

    def started(self, run: Run) -> None: ...

    def finished(self, run: Run, summary: dict) -> None: ...

    def tick(self) -> None: ...


class Launcher(Protocol):
    """Trains the runs of a comparison: :data:`LAUNCHERS` holds the classes, built with their options."""

    @property
    def name(self) -> str:
        """As registered (written in results.md): a class attribute, or an instance's."""

    def parallel(self, jobs: int, runs: int) -> int:
        """How many of ``runs`` train at once (``jobs``: ``compare``'s ``jobs``)."""

    def in_process(self, jobs: int, runs: int) -> bool:
        """Whether the runs train in this process (then they draw their own progress bars)."""

    def on_this_machine(self) -> bool:
        """Whether the runs train on this machine (so that their throughput can be measured here)."""

    def threads(self, jobs: int) -> int | None:
        """Torch threads of each run when none are asked for (None: the cores the run finds)."""

    def launch(self, runs: list[Run], train_fn: Callable[[TrainConfig], dict], *, jobs: int, out: str,
               watch: Watch) -> None:
        """Train every run; ``out`` is the comparison's folder (for logs)."""


LAUNCHERS: Registry[Callable[..., Launcher]] = Registry("launcher")


def create_launcher(name: str, **options) -> Launcher:
    """The launcher ``name`` (:data:`LAUNCHERS`) with ``options``, e.g. ``create_launcher("submitit",
    partition="gpu", gpus_per_run=1)``; an option it does not take is a ``ValueError``."""
    cls = LAUNCHERS.get(name, who="compare: launcher")
    try:
        return cls(**options)
    except TypeError as e:
        fields = getattr(cls, "__dataclass_fields__", {})
        unknown = sorted(set(options) - set(fields))
        if not unknown:
            raise
        takes = ", ".join(fields) or "no options"
        raise ValueError(f"compare: the {name} launcher takes no option {', '.join(unknown)} (it takes: {takes})") \
            from e


class RunFailedError(RuntimeError):
    """A run failed where a launcher ran it (a cluster job): the message names the run, the error and the log."""


def _keep_going(runs: list[Run], limit: int, start, watch: Watch) -> None:
    """Start runs as slots free up, at most ``limit`` at a time (``start(run)`` returns a handle with
    ``done()`` and ``result()``), and report each as it ends."""
    waiting = list(runs)
    going: list[tuple[Run, Any]] = []  # (run, its handle)
    while waiting or going:
        while waiting and len(going) < limit:
            run = waiting.pop(0)
            going.append((run, start(run)))
            watch.started(run)
        ended = [(run, handle) for run, handle in going if handle.done()]
        for run, handle in ended:
            going.remove((run, handle))
            watch.finished(run, handle.result())
        if not ended:
            time.sleep(_POLL_S)
        watch.tick()


def _without_stdout(train_fn: Callable[[TrainConfig], dict], cfg: TrainConfig) -> dict:
    """``train_fn(cfg)`` with its per-epoch lines sent nowhere: several runs at once would mix theirs
    (each run keeps them in its ``metrics.csv``)."""
    with open(os.devnull, "w", encoding="utf-8") as sink, contextlib.redirect_stdout(sink):
        return train_fn(cfg)


@dataclass(frozen=True)
class LocalLauncher:
    """On this machine: in this process when one run trains at a time, else ``jobs`` spawned processes."""

    name: ClassVar[str] = "local"

    def parallel(self, jobs: int, runs: int) -> int:
        return max(1, min(jobs, runs))

    def in_process(self, jobs: int, runs: int) -> bool:
        return self.parallel(jobs, runs) == 1

    def on_this_machine(self) -> bool:
        return True

    def threads(self, jobs: int) -> int | None:
        return 1 if jobs > 1 else None

    def launch(self, runs, train_fn, *, jobs, out, watch) -> None:
        if self.in_process(jobs, len(runs)):
            for run in runs:
                watch.started(run)
                watch.finished(run, train_fn(run.cfg))
            return
        parallel = self.parallel(jobs, len(runs))
        with ProcessPoolExecutor(max_workers=parallel, mp_context=mp.get_context("spawn")) as pool:
            _keep_going(runs, parallel, lambda run: pool.submit(_without_stdout, train_fn, run.cfg), watch)


class _SubmititRun:
    """One run as a submitit job: distributed over the job's tasks when it has several, and checkpointable:
    cut by its time limit or preempted, the job is requeued and ``train_fn`` resumes from ``last.state.pt``."""

    def __init__(self, train_fn: Callable[[TrainConfig], dict], cfg: TrainConfig):
        self.train_fn, self.cfg = train_fn, cfg

    def __call__(self) -> dict:
        import submitit

        if submitit.JobEnvironment().num_tasks > 1:  # one process per GPU: the variables torchrun would set
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        return self.train_fn(self.cfg)

    def checkpoint(self):
        import submitit

        return submitit.helpers.DelayedSubmission(_SubmititRun(self.train_fn, self.cfg))


class _JobHandle:
    """A submitted run: ``done()`` and ``result()`` (rank 0's summary), a failure said in one line."""

    def __init__(self, run: Run, job):
        self.run, self.job = run, job

    def done(self) -> bool:
        return self.job.done()

    def result(self) -> dict:
        try:
            return self.job.results()[0]
        except Exception as e:  # submitit's FailedJobError / UncompletedJobError carry the job's traceback
            lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
            raise RunFailedError(f"compare: {self.run.label} failed in submitit job {self.job.job_id}: "
                                 f"{lines[-1] if lines else type(e).__name__} (log: {self.job.paths.stderr})") from e


def _positive(value, name: str, *, zero: bool = False) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1)):
        raise ValueError(f"compare: the submitit launcher's {name} must be a {'non-negative' if zero else 'positive'} "
                         f"integer, got {value!r}")


@dataclass(frozen=True)
class SubmititLauncher:
    """submitit's ``AutoExecutor``: SLURM jobs on a cluster, else jobs on this machine.

    ``cluster``: ``"slurm"``, ``"local"``, ``"debug"`` or None (submitit's choice: SLURM where it is found).
    ``gpus_per_run`` and ``cpus_per_run`` count a run's GPUs and cores over all its nodes (0 GPUs: on the
    CPU); ``time_limit``: minutes of each job (default 120 on SLURM, none here); ``array_parallelism``:
    jobs of the array running at once on SLURM (default all), runs at once elsewhere (default ``jobs``).
    """

    name: ClassVar[str] = "submitit"
    cluster: str | None = None
    partition: str | None = None
    gpus_per_run: int = 0
    cpus_per_run: int | None = None
    time_limit: int | None = None
    nodes_per_run: int = 1
    array_parallelism: int | None = None

    def __post_init__(self):
        try:
            import submitit
        except ImportError as e:
            raise ImportError(f"compare: the submitit launcher needs submitit: {SLURM_INSTALL}") from e
        _positive(self.gpus_per_run, "gpus_per_run", zero=True)
        for name in ("cpus_per_run", "time_limit", "nodes_per_run", "array_parallelism"):
            _positive(getattr(self, name), name)
        known = ("slurm", "local", "debug")
        if self.cluster is not None and self.cluster not in known:
            raise ValueError(f"compare: the submitit launcher's cluster must be one of {', '.join(known)} or None, "
                             f"got {self.cluster!r}")
        object.__setattr__(self, "cluster", self.cluster or submitit.AutoExecutor.which())
        if self.cluster != "slurm":
            slurm_only = [f"{k}={getattr(self, k)!r}" for k in ("partition",) if getattr(self, k) is not None]
            slurm_only += [f"nodes_per_run={self.nodes_per_run}"] if self.nodes_per_run > 1 else []
            if slurm_only:
                raise ValueError(f"compare: {', '.join(slurm_only)} needs SLURM, and submitit found none here "
                                 f"(cluster {self.cluster!r}: the runs would train on this machine)")
        if self.gpus_per_run % self.nodes_per_run:
            raise ValueError(f"compare: the submitit launcher's gpus_per_run={self.gpus_per_run} must divide evenly "
                             f"among its nodes_per_run={self.nodes_per_run} nodes")
        if self.cpus_per_run and self.cpus_per_run % self.tasks:
            raise ValueError(f"compare: the submitit launcher's cpus_per_run={self.cpus_per_run} must divide evenly "
                             f"among a run's {self.tasks} processes (one per GPU, at least one per node)")

    @property
    def tasks(self) -> int:
        """Processes of each run: one per GPU, or one per node on the CPU."""
        return max(self.gpus_per_run, self.nodes_per_run)

    def parallel(self, jobs: int, runs: int) -> int:
        if self.cluster == "debug":
            return 1
        return max(1, min(self.array_parallelism or (runs if self.cluster == "slurm" else jobs), runs))

    def in_process(self, jobs: int, runs: int) -> bool:
        return False

    def on_this_machine(self) -> bool:
        return self.cluster != "slurm"

    def threads(self, jobs: int) -> int | None:
        if self.cpus_per_run:
            return self.cpus_per_run // self.tasks
        return None if self.cluster == "slurm" or jobs == 1 else 1

    def executor(self, folder: str, runs: int):
        """submitit's executor for ``runs`` jobs, its logs in ``folder``."""
        import submitit

        executor = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        minutes = self.time_limit or (DEFAULT_SLURM_MINUTES if self.cluster == "slurm" else _NO_LIMIT_MINUTES)
        params = dict(name="attnvision-compare", nodes=self.nodes_per_run,
                      tasks_per_node=self.tasks // self.nodes_per_run, timeout_min=minutes)
        if self.gpus_per_run:
            params.update(gpus_per_node=self.gpus_per_run // self.nodes_per_run)
        if self.cpus_per_run:
            params.update(cpus_per_task=self.cpus_per_run // self.tasks)
        if self.cluster == "slurm":
            params.update(slurm_array_parallelism=self.parallel(1, runs))
            if self.partition:
                params.update(slurm_partition=self.partition)
        executor.update_parameters(**params)
        return executor

    def launch(self, runs, train_fn, *, jobs, out, watch) -> None:
        folder = os.path.join(out, "submitit")  # SLURM: a folder per job (%j); here the jobs' files name their pid
        executor = self.executor(os.path.join(folder, "%j") if self.cluster == "slurm" else folder, len(runs))
        if self.cluster == "slurm":  # one job array: SLURM queues the runs, array_parallelism at a time
            with executor.batch():
                jobs_of = [executor.submit(_SubmititRun(train_fn, run.cfg)) for run in runs]
            handles = {id(run): _JobHandle(run, job) for run, job in zip(runs, jobs_of)}
            _keep_going(runs, len(runs), lambda run: handles[id(run)], watch)
            return
        started: list[_JobHandle] = []

        def start(run: Run) -> _JobHandle:
            started.append(_JobHandle(run, executor.submit(_SubmititRun(train_fn, run.cfg))))
            return started[-1]

        try:
            _keep_going(runs, self.parallel(jobs, len(runs)), start, watch)
        except BaseException:  # a failed run or Ctrl-C: stop the jobs started here too (each keeps its last state)
            for handle in started:
                if not handle.job.done():
                    handle.job.cancel(check=False)
            raise


LAUNCHERS.register("local", LocalLauncher)
LAUNCHERS.register("submitit", SubmititLauncher)
