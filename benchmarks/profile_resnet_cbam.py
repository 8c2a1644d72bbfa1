"""Where one eager inference call of a ResNet with attention spends its time, operator by operator.

    python benchmarks/profile_resnet_cbam.py [--model resnet50_cbam] [--batch 4] [--threads 2]

``torch.profiler`` over one call (after a warm-up call) in inference mode, 224×224, the model's
default layout (our ResNets run on channels-last memory); prints a markdown table of the
operators by self time. The results file quotes its output.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import attnvision as av  # noqa: E402
from attnvision._table import format_table  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50_cbam")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = av.create_model(args.model).eval()
    x = torch.randn(args.batch, 3, 224, 224)
    with torch.inference_mode():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) / 1e3
    rows = [[f"`{e.key.removeprefix('aten::')}`", f"{e.self_cpu_time_total / 1e3:.0f} ms", e.count]
            for e in events[:args.rows]]
    print(f"{args.model}, batch {args.batch}, 224×224, {args.threads} threads: {total:.0f} ms of self time in all")
    print(format_table(["operator", "self time", "calls"], rows, markdown=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
