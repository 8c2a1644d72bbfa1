"""Evolving attention against plain multi-head self-attention: forward+backward time and peak memory.

    python benchmarks/bench_evolving.py [--quick] [--batch 8 --tokens 196 --dim 384 --heads 6]

Rows (one attention layer on (B, N, C) tokens, the loss is the output's sum):
- ``MultiHeadSelfAttention``: ours, scaled-dot-product-attention kernel (the reference, 1.00x);
- ``MultiHeadSelfAttention(return_logits=True)``: ours, materialising the N×N logits;
- ``torch.nn.MultiheadAttention`` and ``timm Attention``: the public peers for plain attention
  (no public evolving attention exists for PyTorch);
- ``EvolvingAttention``: α = 0.5, β = 1.0, 3×3 conv, ReLU, with ``prev_logits`` of a previous
  layer that require a gradient (as in a chain): the fused autograd function, and the same layer
  with ``fused = False`` (the equations op by op);
- ``3×3 logit convolution alone``: the evolving layer's convolution over a (B, heads, N, N) map,
  batched, channels-last (its fastest layout here), with the gradients to its input and weight: work
  plain attention has no counterpart for, so plain attention plus this row is the least time an
  evolving layer built from PyTorch's convolution kernels can take.

Time: median over interleaved repeats (each row once per round, in turn). Peak memory: the
largest total of tensor bytes allocated during one forward+backward beyond those alive before it
(``attnvision.profiling.benchmark.peak_memory_mib``, what ``attnvision benchmark`` reports: the
CPU allocator's events from ``torch.profiler``, summed in order): parameters, inputs and
gradients already alive do not count; gradients created by the step, activations saved for
backward and temporaries do, even those an operator frees before it returns.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from common import cpu_name  # noqa: E402
from attnvision._table import format_table  # noqa: E402
from attnvision.io import atomic_write_text  # noqa: E402
from attnvision.layers import EvolvingAttention, MultiHeadSelfAttention  # noqa: E402
from attnvision.profiling.benchmark import peak_memory_mib  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "evolving.md"
CONV = "3×3 logit convolution alone"


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
    composite = copy.deepcopy(evolving)
    composite.fused = False
    cases["EvolvingAttention"] = lambda: evolving(x, prev)[0]
    cases["EvolvingAttention(fused=False)"] = lambda: composite(x, prev)[0]
    logit_map = torch.randn(b, heads, n, n).contiguous(memory_format=torch.channels_last).requires_grad_()
    cases[CONV] = lambda: evolving.conv(logit_map)
    params = [p for m in (ours, evolving, composite, torch_mha) for p in m.parameters()] + [x, prev, logit_map]
    return cases, params


def step(fn, params):
    for p in params:
        p.grad = None
    fn().sum().backward()


def peak_bytes(fn, params) -> float:
    step(fn, params)  # warm: lazily created kernels and buffers do not count
    for p in params:
        p.grad = None
    return peak_memory_mib(lambda: fn().sum().backward(), torch.device("cpu")) * 2 ** 20


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
    load = os.getloadavg()[0]
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
    def ratios(name):
        return statistics.median(times[name]) / t_ref, memory[name] / m_ref

    (t_ratio, m_ratio), (t_comp, m_comp) = ratios("EvolvingAttention"), ratios("EvolvingAttention(fused=False)")
    t_floor = 1.0 + ratios(CONV)[0]
    machine = (f"{cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads, load average {load:.1f} when the run started")
    text = "\n".join([
        "# Evolving attention vs plain multi-head self-attention",
        "",
        f"`python benchmarks/bench_evolving.py{' --quick' if args.quick else ''}`: B={args.batch}, N={args.tokens}, "
        f"C={args.dim}, {args.heads} heads, float32, CPU ({machine}); {repeats} interleaved repeats.",
        "",
        table,
        "",
        f"EvolvingAttention / MultiHeadSelfAttention: time {t_ratio:.2f}x (target <= 1.3x), "
        f"peak memory {m_ratio:.2f}x (target <= 2x); op by op (`fused = False`): time {t_comp:.2f}x, "
        f"memory {m_comp:.2f}x. Plain attention plus the logit convolution alone: {t_floor:.2f}x, the floor for "
        f"an evolving layer on PyTorch's convolution kernels; "
        f"the fused layer spends {t_ratio - t_floor:.2f}x above it.",
        "",
        "Peak memory: the largest total of tensor bytes allocated during one forward+backward beyond those alive",
        "before it (`attnvision.profiling.benchmark.peak_memory_mib`, as `attnvision benchmark` reports it: the CPU",
        "allocator's events recorded by `torch.profiler`, summed in order). Tensors alive before the step",
        "(parameters, inputs, `prev_logits`) do not count; gradients created by the step, activations saved for",
        "backward and temporaries do, even those an operator frees before it returns.",
        "",
        f"One (B, heads, N, N) float32 map is {unit / 2**20:.1f} MiB here, while the plain layer never holds one: "
        "its scaled-dot-product kernel works tile by tile. Evolving attention must hold two: its output A_logit "
        "(the next layer's `prev_logits`) and the gradient of `prev_logits`. The fused autograd function "
        "(`EvolvingAttentionFunction`) holds no other: it works image by image, so that only a few images' maps "
        "exist besides those two (at most six: in backward, whose channels-last convolution runs on two images "
        "at once, their ∂L/∂A_logit and A_input in both layouts in turn, and the gradient it returns), "
        "forms A_input in one `baddbmm` from the q/k/v projection itself (no copies of q, k, v), keeps nothing "
        "for backward but that projection, `prev_logits` and A_logit (A_input and A are recomputed), takes the "
        "softmax backward's row sum from the small A·V, and writes the gradients of q, k and v into one tensor. "
        "Its time above plain attention is, first, the 3×3 convolution over the heads' logit image (forward, and "
        "the backward to its input and weight; the row above measures it batched, in its fastest layout); then "
        "what holding one image's maps at a time costs: that convolution run image by image in forward and two "
        "images at a time in backward, where its maps are converted to channels-last and back (batched, it "
        "would hold every image's maps at once: several more MiB of the memory above), the A_input product "
        "recomputed in backward, and the element-wise passes over the maps that a tiled kernel keeps in "
        "registers.",
        "",
    ])
    print(text)
    if not args.no_write:
        atomic_write_text(RESULTS, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
