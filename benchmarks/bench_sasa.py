"""SASA local self-attention: our halo-tiled kernel against the common unfold implementation.

Both compute the same layer from the same parameters (1×1 q/k/v projections, relative
row/column logits, masked k×k windows); the unfold one builds the (B, C·k², H·W) key and value
tensors, as the public SASA implementations do. Forward (inference, no autograd) and
forward+backward are timed in one process, interleaving the repeats (ours, unfold, ours, ...)
and taking medians. Peak memory is the most tensor memory the call holds at once beyond what
existed before it (CPU: replayed from the profiler's allocation timeline; CUDA: the allocator's peak).

    python benchmarks/bench_sasa.py            # writes benchmarks/results/sasa.md
    python benchmarks/bench_sasa.py --quick    # fewer configurations and repeats, prints only
    python benchmarks/bench_sasa.py --threads 1 --device cuda
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "layers"))

from common import cpu_name  # noqa: E402
from attnvision._table import format_table  # noqa: E402
from attnvision.io import atomic_write_text  # noqa: E402
from attnvision.layers import LocalSelfAttention2d  # noqa: E402
from attnvision.profiling import profile  # noqa: E402
from attnvision.profiling.benchmark import gemm_peak_gflops  # noqa: E402
from sasa_reference import reference_layer  # noqa: E402

# (batch, channels, size, kernel); 112×112 runs at batch 2 because the unfold peer's
# fwd+bwd would need about 5 GB (k=7) and 12 GB (k=11) of RAM at batch 8.
CONFIGS = [(8, 64, 56, 7), (2, 64, 56, 7), (2, 64, 112, 7), (2, 64, 112, 11)]
QUICK = [(8, 64, 56, 7), (2, 64, 56, 7)]
HEADS = 8


class Unfold(nn.Module):
    """The unfold implementation, reading the parameters of the layer it is compared with."""

    def __init__(self, layer: LocalSelfAttention2d):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return reference_layer(self.layer, x)[0]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _run(fn, x, backward: bool):
    if backward:
        fn(x).sum().backward()
    else:
        with torch.no_grad():
            fn(x)


def peak_bytes(fn, x, backward: bool, device) -> int:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        _run(fn, x, backward)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        _run(fn, x, backward)
    current = peak = 0
    for _, action, _, size in sorted(prof._memory_profile().timeline, key=lambda event: event[0]):
        current += size if action == Action.CREATE else -size if action == Action.DESTROY else 0
        peak = max(peak, current)
    return peak


def bench(config, repeats: int, device, peak: float) -> list[list]:
    B, C, size, k = config
    torch.manual_seed(0)
    ours = LocalSelfAttention2d(C, C, k, HEADS).to(device)
    macs = profile(ours, (B, C, size, size)).macs  # the true multiply-adds: projections and the k×k windows
    peer = Unfold(ours)
    x = torch.randn(B, C, size, size, device=device, requires_grad=True)
    with torch.no_grad():
        err = (ours(x) - peer(x)).abs().max().item()
    rows = []
    for backward in (False, True):
        fns = {"ours": ours, "unfold": peer}
        for fn in fns.values():           # warm-up
            _run(fn, x, backward)
        times = {name: [] for name in fns}
        for _ in range(repeats):
            for name, fn in fns.items():
                ours.zero_grad(set_to_none=True)
                x.grad = None
                _sync(device)
                t0 = time.perf_counter()
                _run(fn, x, backward)
                _sync(device)
                times[name].append(time.perf_counter() - t0)
        t = {name: statistics.median(v) * 1e3 for name, v in times.items()}
        mem = {name: peak_bytes(fn, x, backward, device) / 2 ** 20 for name, fn in fns.items()}
        gflops = 2 * macs * (3 if backward else 1) / (t["ours"] / 1e3) / 1e9  # backward: twice the forward's work
        rows.append([f"{B}×{C}×{size}×{size}, k={k}", "fwd+bwd" if backward else "fwd",
                     f"{t['ours']:.0f}", f"{t['unfold']:.0f}", f"{t['unfold'] / t['ours']:.1f}x",
                     f"{gflops:.1f}", f"{gflops / peak:.0%}",
                     f"{mem['ours']:.0f}", f"{mem['unfold']:.0f}", f"{mem['unfold'] / mem['ours']:.1f}x",
                     f"{err:.1e}"])
        x.grad = None
        ours.zero_grad(set_to_none=True)
    return rows


def machine(device) -> str:
    text = (f"{os.cpu_count()} CPUs ({cpu_name()}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the start")
    if device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two configurations, one repeat; print only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sasa.md"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    configs, repeats = (QUICK, 1) if args.quick else (CONFIGS, args.repeats)
    where = machine(device)
    peak = gemm_peak_gflops(device=device)
    rows = []
    for config in configs:
        rows += bench(config, repeats, device, peak)
        print(format_table(HEADERS, rows[-2:]), flush=True)
    table = format_table(HEADERS, rows, markdown=True)
    print(table)
    if not args.quick:
        text = (f"# SASA local self-attention: halo-tiled kernel vs unfold\n\n"
                f"`python benchmarks/bench_sasa.py{' --threads ' + str(args.threads) if args.threads else ''}` "
                f"on {device.type}: {where}. "
                f"{HEADS} heads, relative positions; times are medians of {repeats} interleaved repeats; "
                f"peak memory is the tensor memory a call holds beyond its inputs and parameters; "
                f"`max |Δ|` is the largest difference between the two outputs. GFLOP/s: two per true "
                f"multiply-add of our layer (its 1×1 projections and B·H·W·k²·(d_qk + d_v) in the windows, "
                f"`attnvision.profile`; fwd+bwd counts three times the forward's), and its share of the fp32 "
                f"matrix-product rate measured at the start ({peak:.0f} GFLOP/s, "
                f"`attnvision.profiling.benchmark.gemm_peak_gflops`).\n\n{table}\n")
        atomic_write_text(args.out, text)
    return 0


HEADERS = ["B×C×H×W", "pass", "ours (ms)", "unfold (ms)", "speed-up", "ours GFLOP/s", "of GEMM peak",
           "ours peak (MiB)", "unfold peak (MiB)",
           "memory ratio", "max |Δ|"]

if __name__ == "__main__":
    sys.exit(main())
