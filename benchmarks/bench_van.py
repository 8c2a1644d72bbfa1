"""VAN throughput: attnvision against Hugging Face transformers' ``VanForImageClassification``.

Both models are built in this process with the same configuration (widths, depths, MLP
ratios, 1000 classes); the transformers model's random weights are loaded into ours with
``load_checkpoint(source="official")`` and the logits are checked to agree before timing.
Repeats are interleaved (ours, peer, ours, peer, ...) so that load from other processes
falls on both alike, and medians are reported. Inference: eval mode under
``torch.inference_mode``; training step: forward, cross-entropy, backward, SGD step.

    python benchmarks/bench_van.py            # van_b0 and van_b2, writes benchmarks/results/van.md
    python benchmarks/bench_van.py --quick    # fewer repeats, smaller batch, no file
"""
from __future__ import annotations

import argparse
import copy
import importlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import attnvision as av  # noqa: E402
from common import cpu_name  # noqa: E402
from attnvision._table import format_table  # noqa: E402
from attnvision.io import atomic_write_text  # noqa: E402
from attnvision.models.van import VAN_VARIANTS  # noqa: E402


def _transformers():
    try:
        return importlib.import_module("transformers")
    except ImportError as e:
        raise SystemExit("bench_van: the peer needs transformers: pip install -e '.[bench]'") from e


def build_pair(name: str):
    """(ours, peer) with identical weights; raises if their logits disagree."""
    from transformers.models.deprecated.van import VanConfig, VanForImageClassification

    dims, depths, *_ = VAN_VARIANTS[name]
    ours = av.create_model(name)
    peer = VanForImageClassification(VanConfig(hidden_sizes=list(dims), depths=list(depths), mlp_ratios=[8, 8, 4, 4],
                                               num_labels=1000, drop_path_rate=0.0, dropout_rate=0.0))
    av.load_checkpoint(ours, peer.state_dict(), source="official")
    ours.eval(), peer.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        diff = (ours(x) - peer(x).logits).abs().max().item()
    if diff > 1e-3:
        raise RuntimeError(f"bench_van: {name} logits differ from the peer's by {diff:.2e}")
    return ours, peer, diff


def _step(model, x, y, train: bool, hf: bool):
    if not train:
        def infer():
            with torch.inference_mode():
                out = model(x)
                return out.logits if hf else out
        return infer
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)

    def train_step():
        out = model(x)
        F.cross_entropy(out.logits if hf else out, y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return train_step


def time_models(ours, peer, batch: int, train: bool, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of ours (on the NCHW batch), the peer in its default layout and the peer
    in channels-last layout (model and batch), repeats interleaved."""
    x = torch.randn(batch, 3, 224, 224)
    y = torch.randint(0, 1000, (batch,))
    peer_cl = copy.deepcopy(peer).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    for m in (ours, peer, peer_cl):
        m.train(train)
    fns = {"ours": _step(ours, x, y, train, False), "peer": _step(peer, x, y, train, True),
           "peer_cl": _step(peer_cl, x_cl, y, train, True)}
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["van_b0", "van_b2"], choices=sorted(VAN_VARIANTS))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="torch threads, one run each "
                        "(default: torch's)")
    parser.add_argument("--quick", action="store_true", help="batch 2, 3 repeats, results not written")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "van.md"))
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.repeats = 2, 3
    transformers = _transformers()
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]

    rows, checks = [], []
    for name in args.models:
        ours, peer, diff = build_pair(name)
        checks.append(f"`{name}`: max |Δlogits| = {diff:.1e}")
        for threads in args.threads or [torch.get_num_threads()]:
            torch.set_num_threads(threads)
            for train in (False, True):
                t = time_models(ours, peer, args.batch, train, args.repeats, args.warmup)
                best = min(t["peer"], t["peer_cl"])
                row = [f"`{name}`", "train step" if train else "inference", threads, args.batch,
                       f"{args.batch / t['ours']:.2f}", f"{args.batch / t['peer']:.2f}",
                       f"{args.batch / t['peer_cl']:.2f}", f"{best / t['ours']:.2f}x"]
                rows.append(row)
                print(" | ".join(str(c) for c in row), flush=True)
    table = format_table(["model", "mode", "threads", "batch", "attnvision (img/s)", "transformers (img/s)",
                          "transformers, channels-last (img/s)", "ratio (ours / their best)"], rows, markdown=True)
    load = (f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
            f"(other processes share the CPUs)")
    machine = (f"{cpu_name()}, {os.cpu_count()} CPUs visible, {load}; "
               f"torch {torch.__version__}, transformers {transformers.__version__}, "
               f"Python {platform.python_version()}")
    text = "\n".join([
        "# VAN: attnvision vs Hugging Face transformers",
        "",
        f"`python benchmarks/bench_van.py {' '.join(argv if argv is not None else sys.argv[1:])}`".replace(" `", "`"),
        "",
        f"Machine: {machine}. Input 224×224, float32, CPU; {args.repeats} interleaved repeats after "
        f"{args.warmup} warm-up, medians. Ours gets the NCHW batch; transformers runs in its default layout and "
        f"channels-last (model and batch), and the ratio is against the faster of the two. Ratio > 1: attnvision "
        f"is faster.",
        "",
        table,
        "",
        "Same weights in both (checked before timing): " + "; ".join(checks) + ".",
        "",
    ])
    print(table)
    if not args.quick:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
