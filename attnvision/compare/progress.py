"""What a comparison says while its runs train elsewhere (other processes, a cluster's jobs): one tqdm bar
over the runs on stderr (runs done / total, time so far, and the time left from the mean run time) and a
line on stdout for each finished run.

The time left (:func:`eta_seconds`) plays the rest of the grid forward: each run still going ends when it
reaches the mean time of the runs finished so far, and each waiting run starts in the first free slot.
"""
from __future__ import annotations

import heapq
import statistics
import sys
import time
from typing import Callable

from tqdm import tqdm

from .launchers import Run


def eta_seconds(mean: float, ages: list[float], waiting: int, parallel: int) -> float:
    """Seconds until the last run ends, when every run takes ``mean`` seconds: the runs going now have
    run for ``ages`` seconds; ``waiting`` more start as the ``parallel`` slots free up."""
    if parallel < 1:
        raise ValueError(f"eta_seconds: parallel must be a positive integer, got {parallel!r}")
    ends = [max(mean - age, 0.0) for age in ages] + [0.0] * max(parallel - len(ages), 0)
    heapq.heapify(ends)
    for _ in range(waiting):
        heapq.heappush(ends, heapq.heappop(ends) + mean)
    return max(ends) if ages or waiting else 0.0


class GridProgress:
    """Follows the runs a launcher trains: ``started(run)``, ``finished(run, summary)``, ``tick()``.

    ``total`` runs in the grid, ``done`` of them finished before; ``parallel`` at most at a time. ``bar``
    shows the progress: a tqdm bar on a terminal; where stderr is a file (a cluster job's log), one line per
    finished run instead of a bar redrawn every second (``tty``: None, ask stderr).
    ``on_finished(run, summary)`` returns the line said for a finished run (None: no line) and may raise (an
    interrupted run).
    """

    def __init__(self, total: int, done: int, parallel: int, *, bar: bool,
                 on_finished: Callable[[Run, dict], str | None], refresh_s: float = 1.0, tty: bool | None = None):
        self.parallel, self.on_finished, self.refresh_s = parallel, on_finished, refresh_s
        self.total, self.done, self.waiting = total, done, total - done
        self.going: dict[int, float] = {}  # id(run) -> when it started
        self.seconds: list[float] = []     # wall time of each run finished here
        self.last_refresh = self.start = time.perf_counter()
        self.log_lines = bar and not (sys.stderr.isatty() if tty is None else tty)
        self.bar = tqdm(total=total, initial=done, desc="compare:", unit="run", file=sys.stderr, dynamic_ncols=True,
                        bar_format="{desc} {n_fmt}/{total_fmt} runs |{bar}| {elapsed} elapsed{postfix}",
                        disable=not bar or self.log_lines)
        self._show_eta()

    def started(self, run: Run) -> None:
        self.going[id(run)] = time.perf_counter()
        self.waiting -= 1

    def finished(self, run: Run, summary: dict) -> None:
        self.seconds.append(time.perf_counter() - self.going.pop(id(run)))
        line = self.on_finished(run, summary)
        if line is not None:
            if self.bar.disable:
                print(line, flush=True)
            else:
                self.bar.write(line, file=sys.stdout)
        self.bar.update()
        self.done += 1
        self._show_eta()
        if self.log_lines:
            elapsed = tqdm.format_interval(time.perf_counter() - self.start)
            print(f"compare: {self.done}/{self.total} runs, {elapsed} elapsed, {self._eta_text()}", file=sys.stderr,
                  flush=True)

    def tick(self) -> None:
        """Redraw at most every ``refresh_s`` seconds, so that the time so far and the time left move."""
        now = time.perf_counter()
        if now - self.last_refresh >= self.refresh_s:
            self._show_eta()
            self.bar.refresh()

    def eta(self) -> float | None:
        """Seconds left (None until a run has finished here: no run time to go by)."""
        if not self.seconds:
            return None
        now = time.perf_counter()
        return eta_seconds(statistics.fmean(self.seconds), [now - t for t in self.going.values()], self.waiting,
                           self.parallel)

    def _eta_text(self) -> str:
        eta = self.eta()
        mean = f", {statistics.fmean(self.seconds):.0f} s/run" if self.seconds else ""
        return f"ETA {'?' if eta is None else tqdm.format_interval(eta)}{mean}"

    def _show_eta(self) -> None:
        self.last_refresh = time.perf_counter()
        self.bar.set_postfix_str(self._eta_text(), refresh=False)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "GridProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
