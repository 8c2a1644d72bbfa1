"""Evolving attention against plain multi-head self-attention: forward+backward time and peak memory.

    python benchmarks/bench_evolving.py [--quick] [--batch 8 --tokens 196 --dim 384 --heads 6]

Rows (one attention layer on (B, N, C) tokens, the loss is the output's sum):
- ``MultiHeadSelfAttention``: ours, scaled-dot-product-attention kernel (the reference, 1.00x);
- ``MultiHeadSelfAttention(return_logits=True)``: ours, materialising the N×N logits;
- ``torch.nn.MultiheadAttention`` and ``timm Attention``: the public peers for plain attention
  (no public evolving attention exists for PyTorch);
- ``EvolvingAttention``: α = 0.5, β = 1.0, 3×3 conv, ReLU, with ``prev_logits`` of a previous
  layer that require a gradient (as in a chain).

Time: median over interleaved repeats (each row once per round, in turn). Peak memory: the
largest total of live CPU tensor bytes during one forward+backward, minus the total when it
started, read from PyTorch's memory timeline (``torch.profiler`` with ``profile_memory=True``,
``export_memory_timeline``): parameters, inputs and gradients already alive do not count;
gradients created by the step, activations saved for backward and temporaries do.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from attnvision.cli._table import format_table  # noqa: E402
from attnvision.io import atomic_write_text  # noqa: E402
from attnvision.layers import EvolvingAttention, MultiHeadSelfAttention  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "evolving.md"


def make_cases(b, n, c, heads):
    x = torch.randn(b, n, c, requires_grad=True)
    prev = torch.randn(b, heads, n, n, requires_grad=True)
    ours = MultiHeadSelfAttention(c, heads)
    evolving = EvolvingAttention(c, heads)
    torch_mha = nn.MultiheadAttention(c, heads, batch_first=True)
    cases = {
        "MultiHeadSelfAttention": lambda: ours(x),
        "MultiHeadSelfAttention(return_logits=True)": lambda: ours(x, return_logits=True)[0],
        "torch.nn.MultiheadAttention": lambda: torch_mha(x, x, x, need_weights=False)[0],
    }
    try:
        from timm.layers import Attention
    except ImportError:
        Attention = None
    if Attention is not None:
        timm_attn = Attention(c, heads, qkv_bias=True)
        cases["timm Attention"] = lambda: timm_attn(x)
    cases["EvolvingAttention"] = lambda: evolving(x, prev)[0]
    params = [p for m in (ours, evolving, torch_mha) for p in m.parameters()] + [x, prev]
    return cases, params


def step(fn, params):
    for p in params:
        p.grad = None
    fn().sum().backward()


def peak_bytes(fn, params) -> int:
    step(fn, params)  # warm: lazily created kernels and buffers do not count
    for p in params:
        p.grad = None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn().sum().backward()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "timeline.json")
        with warnings.catch_warnings():  # deprecated in favour of a CUDA-only recorder; the CPU timeline is what we need
            warnings.simplefilter("ignore", FutureWarning)
            prof.export_memory_timeline(path, device="cpu")
        with open(path) as f:
            _, sizes = json.load(f)
    totals = [sum(s) for s in sizes]
    return max(totals) - totals[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=196)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    torch.manual_seed(0)
    cases, params = make_cases(args.batch, args.tokens, args.dim, args.heads)

    times = {name: [] for name in cases}
    for fn in cases.values():
        step(fn, params)  # warm-up
    for _ in range(repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            step(fn, params)
            times[name].append(time.perf_counter() - t0)
    memory = {name: peak_bytes(fn, params) for name, fn in cases.items()}

    ref = "MultiHeadSelfAttention"
    unit = args.batch * args.heads * args.tokens ** 2 * 4
    t_ref, m_ref = statistics.median(times[ref]), memory[ref]
    rows = []
    for name in cases:
        t, m = statistics.median(times[name]), memory[name]
        rows.append([name, f"{t * 1e3:.1f}", f"{t / t_ref:.2f}x", f"{m / 2**20:.1f}", f"{m / m_ref:.2f}x"])
    table = format_table(["layer", "fwd+bwd ms (median)", "time vs ours", "peak MiB", "memory vs ours"], rows,
                         markdown=True)
    t_ratio = statistics.median(times["EvolvingAttention"]) / t_ref
    m_ratio = memory["EvolvingAttention"] / m_ref
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads")
    text = "\n".join([
        "# Evolving attention vs plain multi-head self-attention",
        "",
        f"`python benchmarks/bench_evolving.py{' --quick' if args.quick else ''}`: B={args.batch}, N={args.tokens}, "
        f"C={args.dim}, {args.heads} heads, float32, CPU ({machine}); {repeats} interleaved repeats.",
        "",
        table,
        "",
        f"EvolvingAttention / MultiHeadSelfAttention: time {t_ratio:.2f}x (target <= 1.5x), "
        f"peak memory {m_ratio:.2f}x (target <= 2x).",
        "",
        "Peak memory: the largest total of live CPU tensor bytes during one forward+backward minus the total",
        "when it started, from PyTorch's memory timeline (`torch.profiler.profile(profile_memory=True,",
        "record_shapes=True, with_stack=True)` then `export_memory_timeline(..., device=\"cpu\")`). Tensors alive",
        "before the step (parameters, inputs, `prev_logits`) do not count; gradients created by the step,",
        "activations saved for backward and temporaries do.",
        "",
        f"Why the memory target is out of reach against the fused kernel: one (B, heads, N, N) float32 map is "
        f"{unit / 2**20:.1f} MiB here, while the whole plain layer peaks at {m_ref / 2**20:.1f} MiB because the "
        "fused scaled-dot-product kernel never holds an N×N map. Evolving attention must: its output includes "
        "A_logit (the next layer's `prev_logits`), the gradient of `prev_logits` is another map, and backward "
        "needs the convolution's input A_input (kept in channels-last layout) and the softmax output A. Against "
        "plain attention that materialises its logits (second row) it costs "
        f"{memory['EvolvingAttention'] / memory['MultiHeadSelfAttention(return_logits=True)']:.2f}x the memory and "
        f"{statistics.median(times['EvolvingAttention']) / statistics.median(times['MultiHeadSelfAttention(return_logits=True)']):.2f}x "
        "the time. The head-to-head 3×3 convolution over the N×N logit image runs in channels-last layout, whose "
        "CPU kernels (above all the weight gradient) are several times faster than the default layout's; each N×N "
        "map is dropped as soon as the step no longer needs it.",
        "",
    ])
    print(text)
    if not args.no_write:
        atomic_write_text(RESULTS, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
