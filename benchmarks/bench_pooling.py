"""CBAM's max poolings: ``amax`` against the indexed max the layers use where a gradient flows back.

    python benchmarks/bench_pooling.py [--threads 1 2] [--quick]

Rows: the global max over H×W (the channel gate's descriptor, ``F.adaptive_max_pool2d`` when indexed)
and the max across channels (the spatial gate's, ``max(1).values`` when indexed) of an 8×256×56×56
channels-last map, forward alone (no gradient) and forward + backward (the loss is the pooled map
weighted by a fixed random tensor). ``attnvision.layers.adaptive_pool`` picks the indexed max only
where a gradient will flow back; this file is why. Medians of interleaved repeats; writes
``benchmarks/results/pooling.md``.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import format_table, interleaved_medians, write_results

SHAPE = (8, 256, 56, 56)
REDUCTIONS = {  # name -> (amax, indexed max)
    "global max over H×W": (lambda x: x.amax((2, 3)), lambda x: F.adaptive_max_pool2d(x, 1).flatten(1)),
    "max across channels": (lambda x: x.amax(1, keepdim=True), lambda x: x.max(1, keepdim=True).values),
}


def _calls(reduce, x, weight, backward: bool):
    if not backward:
        def infer():
            with torch.no_grad():
                reduce(x)
        return infer

    def step():
        x.grad = None
        (reduce(x) * weight).sum().backward()
    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="3 repeats, no results file")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    torch.manual_seed(0)
    x = torch.randn(SHAPE).contiguous(memory_format=torch.channels_last).requires_grad_()
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, (amax, indexed) in REDUCTIONS.items():
            weight = torch.randn(amax(x.detach()).shape)
            for backward in (False, True):
                fns = {"amax": _calls(amax, x, weight, backward), "indexed": _calls(indexed, x, weight, backward)}
                t = interleaved_medians(fns, repeats, 2)
                rows.append([name, threads, "fwd+bwd" if backward else "fwd", f"{t['amax'] * 1e3:.2f}",
                             f"{t['indexed'] * 1e3:.2f}", f"{t['amax'] / t['indexed']:.2f}x"])
    headers = ["reduction", "threads", "pass", "amax (ms)", "indexed max (ms)", "amax / indexed"]
    notes = (f"Input {'×'.join(map(str, SHAPE))}, float32, channels-last. Produced by "
             f"`python benchmarks/bench_pooling.py --threads {' '.join(map(str, args.threads))}`.")
    if args.quick:
        print(format_table(headers, rows))
    else:
        print(write_results("pooling", "CBAM's max poolings: amax against the indexed max", headers, rows, notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
