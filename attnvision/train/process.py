"""Process state that a run changes, saved and restored around it: ``with scoped_process_state(...)``.

``train``, ``evaluate`` and ``compare`` set torch's thread count, deterministic mode, cuDNN's flags,
``CUBLAS_WORKSPACE_CONFIG`` and SIGINT and SIGTERM handlers for their own work; a program that calls them (a
notebook, a sweep that trains many runs in one process) finds all of it as it was afterwards.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any, Iterator

import torch

# the environment variables a run may set (deterministic cuBLAS on GPUs)
_ENV = ("CUBLAS_WORKSPACE_CONFIG",)


def set_deterministic(on: bool) -> None:
    """Deterministic kernels (and cuBLAS workspace) on, or the fast defaults back."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on


@contextlib.contextmanager
def scoped_process_state(*, threads: int | None = None, deterministic: bool | None = None) -> Iterator[None]:
    """Run the block with ``threads`` torch threads and ``deterministic`` mode (None: leave as is), then
    restore the thread count, deterministic mode, cuDNN flags, the environment variables a run sets and
    the SIGINT and SIGTERM handlers, whatever the block did to them."""
    main_thread = threading.current_thread() is threading.main_thread()
    saved: dict[str, Any] = dict(
        threads=torch.get_num_threads(), deterministic=torch.are_deterministic_algorithms_enabled(),
        warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn=(torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark),
        env={k: os.environ.get(k) for k in _ENV},
        signals={s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main_thread else {})
    try:
        if threads:
            torch.set_num_threads(threads)
        if deterministic is not None:
            set_deterministic(deterministic)
        yield
    finally:
        torch.set_num_threads(saved["threads"])
        torch.use_deterministic_algorithms(saved["deterministic"], warn_only=saved["warn_only"])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved["cudnn"]
        for key, value in saved["env"].items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for signum, handler in saved["signals"].items():
            if handler is not None:  # None: set outside Python, which cannot be restored
                signal.signal(signum, handler)
