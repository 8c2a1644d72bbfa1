"""CoAtNet-0: our model against timm's ``coatnet_0_224``, in the same process.

    python benchmarks/bench_coatnet.py [--quick] [--batch B] [--repeats R] [--threads 1 2]

Inference (eval, no grad) and a training step (forward, backward, AdamW step), images per
second at each thread count. Ours gets the NCHW batch; timm runs in its default layout and
channels-last (model and batch), and the ratio is ours against the faster of the two (> 1
means we are faster). The models alternate repeat by repeat so that load from other
processes falls on all alike; the median of the repeats is kept. Writes
benchmarks/results/coatnet.md.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform

import torch

from common import RESULTS, cpu_name, infer_fn, interleaved_medians, train_fn

import attnvision as av
from attnvision._table import format_table
from attnvision.io import atomic_write_text

RESULT = RESULTS / "coatnet.md"


def _timm():
    try:
        import timm
    except ImportError as e:
        raise SystemExit("bench_coatnet: the peer needs timm: pip install -e '.[bench]'") from e
    return timm


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 2, 3 repeats")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="torch threads, one run each")
    args = parser.parse_args()
    batch = args.batch or (2 if args.quick else 4)
    repeats = args.repeats or (3 if args.quick else 5)
    timm = _timm()

    load_before = os.getloadavg()[0]
    torch.manual_seed(0)
    ours = av.create_model("coatnet_0")
    peer = timm.create_model("coatnet_0_224", pretrained=False)
    peer_cl = copy.deepcopy(peer).to(memory_format=torch.channels_last)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_peer = sum(p.numel() for p in peer.parameters())
    x = torch.randn(batch, 3, 224, 224)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,))

    rows = []
    for threads in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        inf = interleaved_medians({"ours": infer_fn(ours, x), "timm": infer_fn(peer, x),
                                   "timm_cl": infer_fn(peer_cl, x_cl)}, repeats)
        trn = interleaved_medians({name: train_fn(m, xi, y, torch.optim.AdamW, lr=1e-4)
                                   for name, m, xi in (("ours", ours, x), ("timm", peer, x),
                                                       ("timm_cl", peer_cl, x_cl))},
                                  repeats)
        for mode, t in (("inference", inf), ("training step", trn)):
            best = min(t["timm"], t["timm_cl"])
            rows.append([mode, str(threads), f"{batch / t['ours']:.2f}", f"{batch / t['timm']:.2f}",
                         f"{batch / t['timm_cl']:.2f}", f"{best / t['ours']:.2f}x"])
            print(" | ".join(rows[-1]), flush=True)
    table = format_table(["coatnet_0, 224×224", "threads", "img/s (ours)", "img/s (timm)",
                          "img/s (timm, channels-last)", "ratio (ours / timm's best)"], rows, markdown=True)
    machine = (f"{cpu_name()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
               f"timm {timm.__version__}, Python {platform.python_version()}; "
               f"1-minute load average {load_before:.1f} before the run and {os.getloadavg()[0]:.1f} after "
               f"(other processes share the cores: compare the ratios, not the absolute rates)")
    cmd = "python benchmarks/bench_coatnet.py" + (" --quick" if args.quick else "") + (
        " --threads " + " ".join(map(str, args.threads)) if args.threads else "")
    text = (f"# CoAtNet-0 vs timm `coatnet_0_224`\n\nMachine: {machine}.\n\n{table}\n\n"
            f"Batch {batch}, float32, median of {repeats} interleaved repeats "
            f"(ours, timm, timm channels-last, ours, ...) "
            f"after one warm-up each. Training step = forward, cross-entropy, backward, AdamW step. "
            f"Ratio = our throughput over that of timm's faster layout. "
            f"Parameters: ours {n_ours:,}, timm {n_peer:,} (ours has the reference "
            f"code's stem conv biases). Produced by `{cmd}`.\n")
    atomic_write_text(RESULT, text)
    print(text)


if __name__ == "__main__":
    main()
