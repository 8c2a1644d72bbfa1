"""``attnvision benchmark MODEL [MODEL ...]``: throughput, memory and achieved GFLOP/s, side by side."""
from __future__ import annotations

import csv
import io

from .._table import format_table
from ..io import atomic_write_text
from ..profiling.benchmark import benchmark
from ._threads import add_threads_option, resolve_threads


def add_parser(sub):
    p = sub.add_parser("benchmark", help="time models side by side (ours, timm:NAME, torchvision:NAME)",
                       description="Inference and training-step throughput, peak memory, MACs and achieved GFLOP/s "
                                   "against a measured matrix-product peak, for every model in one interleaved run.")
    p.add_argument("models", nargs="+", metavar="MODEL", help="registered names, timm:NAME or torchvision:NAME")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"),
                   help="input size (default: the first model's pretrained_cfg input_size)")
    add_threads_option(p)
    p.add_argument("--channels-last", action="store_true", help="models and input in channels-last memory")
    p.add_argument("--compile", action="store_true", help="torch.compile every model")
    p.add_argument("--optimize", action="store_true",
                   help="also time each of our models after attnvision.optimize_for_inference (needs --no-train)")
    p.add_argument("--no-train", dest="train", action="store_false", help="inference only")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per model (median kept)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--csv", metavar="PATH", help="also write the results as CSV")
    p.set_defaults(func=run)


def run(args) -> int:
    threads = resolve_threads(args.threads, "benchmark")
    results, peak = benchmark(args.models, batch_size=args.batch_size, input_size=args.input_size,
                              threads=threads, channels_last=args.channels_last, compile=args.compile,
                              optimize=args.optimize, train=args.train, repeats=args.repeats,
                              num_classes=args.num_classes, device=args.device, progress=True)
    first = results[0]
    headers = ["model", "params", "GMACs", "infer img/s", f"vs {first.name}", "infer GFLOP/s", "of peak", "infer MiB"]
    if args.train:
        headers += ["train img/s", f"vs {first.name}", "train GFLOP/s", "of peak", "train MiB"]
    rows = []
    for r in results:
        row = [r.name, f"{r.params:,}", f"{r.macs / 1e9:.3f}", f"{r.infer_images_per_s:.1f}",
               f"{r.infer_images_per_s / first.infer_images_per_s:.2f}x", f"{r.infer_gflops:.1f}",
               f"{100 * r.infer_peak_fraction:.0f}%", f"{r.infer_peak_mib:.1f}"]
        if args.train:  # benchmark(train=True) measured these
            assert r.train_images_per_s is not None and first.train_images_per_s is not None
            assert r.train_peak_fraction is not None
            row += [f"{r.train_images_per_s:.1f}", f"{r.train_images_per_s / first.train_images_per_s:.2f}x",
                    f"{r.train_gflops:.1f}", f"{100 * r.train_peak_fraction:.0f}%", f"{r.train_peak_mib:.1f}"]
        rows.append(row)
    c, h, w = first.input_size
    layout = "channels-last" if args.channels_last else "NCHW"
    print(f"batch {args.batch_size}, {c}x{h}x{w}, {layout}, {threads}"
          f" threads{', compiled' if args.compile else ''}; median of {args.repeats} interleaved repeats; "
          f"fp32 GEMM peak {peak:.1f} GFLOP/s")
    print(format_table(headers, rows))
    if args.csv:
        buf = io.StringIO()
        fields = list(first.as_dict())
        writer = csv.DictWriter(buf, fieldnames=fields + ["gemm_peak_gflops"])
        writer.writeheader()
        for r in results:
            writer.writerow({**r.as_dict(), "input_size": "x".join(map(str, r.input_size)), "gemm_peak_gflops": peak})
        atomic_write_text(args.csv, buf.getvalue())
        print(f"wrote {args.csv}")
    return 0
