"""Throughput, peak memory and achieved arithmetic rate of models, side by side in one process.

``benchmark(["resnet50_cbam", "timm:resnet50"], batch_size=8)`` builds each model (ours by
name, ``timm:``/``torchvision:`` peers too), then times inference (eval mode, no autograd) and a
training step (forward, cross-entropy, backward, SGD step) with the models taking turns repeat
by repeat, so that load from other processes or clock changes fall on all of them alike; the
median of the repeats is kept. Each result also carries:

- ``macs``: multiply-adds of one image (:func:`attnvision.profile`);
- ``infer_gflops``: ``2 · macs · images/s`` / 1e9, the rate at which the model does arithmetic,
  and ``infer_peak_fraction``, that rate over the measured fp32 matrix-product peak of the same
  threads (:func:`gemm_peak_gflops`) — how close to the machine's limit the model runs;
- ``train_gflops``: ``3 × 2 · macs · images/s`` (backward ≈ twice the forward's work);
- ``infer_peak_mib`` / ``train_peak_mib``: the largest total of tensor memory allocated during
  one call beyond what was alive before it (CUDA: the allocator's peak; CPU: PyTorch's
  allocation events, summed in order).

The command ``attnvision benchmark`` prints these as a table and writes them as CSV.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..factory import create_model
from ..inference import optimize_for_inference
from .profile import profile


@dataclass
class BenchResult:
    """One model's measurements; throughputs are images per second (median of the repeats)."""

    name: str
    batch_size: int
    input_size: tuple[int, int, int]
    params: int
    macs: int
    infer_images_per_s: float
    infer_gflops: float
    infer_peak_fraction: float
    infer_peak_mib: float
    train_images_per_s: float | None = None
    train_gflops: float | None = None
    train_peak_fraction: float | None = None
    train_peak_mib: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def interleaved_medians(fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, the functions called in turn ``repeats`` times."""
    if repeats < 1:
        raise ValueError(f"interleaved_medians: repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def infer_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One inference call (eval mode, no autograd) of ``model`` on ``x``."""
    model.eval()

    def run():
        with torch.inference_mode():
            model(x)
        _sync(x.device)
    return run


def train_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer=torch.optim.SGD,
             **opt_kwargs) -> Callable[[], None]:
    """One training step: forward, cross-entropy, backward, optimizer step."""
    model.train()
    opt = optimizer(model.parameters(), **(opt_kwargs or dict(lr=1e-3, momentum=0.9)))

    def run():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        _sync(x.device)
    return run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_peak_gflops(size: int = 1024, repeats: int = 5, device: str | torch.device = "cpu") -> float:
    """The fp32 matrix-product rate (GFLOP/s, 2 per multiply-add) of ``size``³ products on ``device``
    with the current thread count: the machine's practical limit for dense arithmetic."""
    device = torch.device(device)
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)

    def gemm() -> None:
        a @ b
        _sync(device)
    seconds = interleaved_medians({"gemm": gemm}, repeats)["gemm"]
    return 2 * size ** 3 / seconds / 1e9


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> float:
    """The largest total of tensor bytes allocated during ``fn()`` beyond those alive before it, in MiB.

    On CUDA the allocator's peak; on the CPU every allocation and free the profiler records, in time order,
    so that temporaries an operator makes and frees inside itself (a convolution's reordered weight) and
    buffers that compiled code allocates outside any operator count as they do on CUDA.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        return (torch.cuda.max_memory_allocated(device) - start) / 2 ** 20
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # the raw "[memory]" records (one per allocation or free, bytes signed); prof.events() would fold those
    # inside an operator into its net usage, hiding what it frees before it returns
    changes = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    total = peak = 0
    for _, nbytes in changes:
        total += nbytes
        peak = max(peak, total)
    return peak / 2 ** 20


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (the profiler's C++ start/stop lines would cut through the progress bar)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _threads(n: int | None):
    before = torch.get_num_threads()
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"benchmark: threads must be a positive integer, got {n!r}")
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


OPTIMIZED = " (optimized)"


def _build(name: str, num_classes: int, channels_last: bool, compile: bool, device: torch.device) -> nn.Module:
    if name.endswith(OPTIMIZED):
        model = create_model(name[:-len(OPTIMIZED)], num_classes=num_classes).to(device).eval()
        return optimize_for_inference(model, channels_last=True, compile=compile)
    model = create_model(name, num_classes=num_classes).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return cast(nn.Module, torch.compile(model)) if compile else model  # compiled, a module (OptimizedModule)


def _input_size(model: nn.Module, given) -> tuple[int, int, int]:
    if given is not None:
        size = tuple(given)
        if len(size) != 3 or not all(isinstance(s, int) and s > 0 for s in size):
            raise ValueError(f"benchmark: input_size must be (C, H, W) positive integers, got {given!r}")
        return size
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("input_size", (3, 224, 224)))


def benchmark(names: Sequence[str], *, batch_size: int = 8, input_size=None, threads: int | None = None,
              channels_last: bool = False, compile: bool = False, optimize: bool = False, train: bool = True,
              repeats: int = 5,
              warmup: int = 1, num_classes: int = 1000, device: str = "cpu", gemm_size: int = 1024,
              progress: bool = False) -> tuple[list[BenchResult], float]:
    """Measure ``names`` side by side; returns the results (in the order given) and the GEMM peak in GFLOP/s.

    All models take the same input: ``input_size`` (C, H, W), or else the first model's
    ``pretrained_cfg["input_size"]``. ``channels_last`` moves models and input to channels-last
    memory; ``compile`` wraps every model in ``torch.compile``. ``optimize`` (inference only) also times
    each of our models after :func:`attnvision.optimize_for_inference` (BatchNorm folded, channels-last),
    as a row "NAME (optimized)" after NAME; its MACs are counted on the eager model.
    """
    if not names:
        raise ValueError("benchmark: give at least one model name")
    if len(set(names)) != len(names):
        raise ValueError(f"benchmark: each model once, got {list(names)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"benchmark: batch_size must be a positive integer, got {batch_size!r}")
    if optimize:
        if train:
            raise ValueError("benchmark: optimize times inference only (the optimized copy has no BatchNorm to "
                             "train); pass train=False (--no-train)")
        names = [m for n in names for m in ((n,) if ":" in n else (n, n + OPTIMIZED))]
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("benchmark: device 'cuda' asked for, but PyTorch sees no GPU; use device='cpu'")
    with _threads(threads):
        models = {n: _build(n, num_classes, channels_last, compile, dev) for n in names}
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=3 + len(names) + (1 + len(names) if train else 0), desc="benchmark", leave=False)
        step = (lambda desc: (bar.set_postfix_str(desc, refresh=False), bar.update())) if bar else (lambda desc: None)
        size = _input_size(next(iter(models.values())), input_size)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.randn(batch_size, *size, device=dev).to(memory_format=fmt)
        y = torch.randint(0, max(num_classes, 1), (batch_size,), device=dev)
        peak = gemm_peak_gflops(gemm_size, device=dev)
        step("GEMM peak")
        counts = {n: _count(models[n[:-len(OPTIMIZED)]] if n.endswith(OPTIMIZED) else m, size)
                  for n, m in models.items()}
        step("MACs")
        infer = {n: infer_fn(m, x) for n, m in models.items()}
        t_inf = interleaved_medians(infer, repeats, warmup)
        step("inference")
        mem_inf = {}
        for n, fn in infer.items():
            mem_inf[n] = peak_memory_mib(fn, dev)
            step(f"memory {n}")
        t_trn, mem_trn = {}, {}
        if train:
            trains = {n: train_fn(m, x, y) for n, m in models.items()}
            t_trn = interleaved_medians(trains, repeats, warmup)
            step("training")
            for n, fn in trains.items():
                mem_trn[n] = peak_memory_mib(fn, dev)
                step(f"memory {n}")
    if bar is not None:
        bar.close()
    results = []
    for n in names:
        params, macs = counts[n]
        ips = batch_size / t_inf[n]
        r = BenchResult(name=n, batch_size=batch_size, input_size=size, params=params, macs=macs,
                        infer_images_per_s=ips, infer_gflops=2 * macs * ips / 1e9,
                        infer_peak_fraction=2 * macs * ips / 1e9 / peak, infer_peak_mib=mem_inf[n])
        if train:
            tps = batch_size / t_trn[n]
            r.train_images_per_s, r.train_gflops = tps, 6 * macs * tps / 1e9
            r.train_peak_fraction, r.train_peak_mib = r.train_gflops / peak, mem_trn[n]
        results.append(r)
    return results, peak


def _count(model: nn.Module, size) -> tuple[int, int]:
    inner = getattr(model, "_orig_mod", model)  # a compiled model is counted through its eager module
    p = profile(inner, (1, *size))
    return p.params, p.macs
