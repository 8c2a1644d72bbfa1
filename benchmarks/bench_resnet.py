"""ResNet-50 with SE / ECA / CBAM: our models against timm's, in the same process.

    python benchmarks/bench_resnet.py [--quick] [--layout nchw|channels-last|timm-best] [--threads 1 2]
    python benchmarks/bench_resnet.py --layout timm-best --optimize   # inference of optimize_for_inference copies
    python benchmarks/bench_resnet.py --layout timm-best --optimize --compile   # and of their compiled copies

Inference (eval, no grad) and a training step (forward, backward, SGD step), images per
second, ratio ours/timm (> 1 means we are faster), at each thread count. Layouts:

- ``nchw``: both get the contiguous (NCHW) batch a data loader gives; timm's model keeps its
  default layout, ours moves to channels-last itself (its default ``channels_last=True``);
  writes ``benchmarks/results/resnet.md``;
- ``channels-last``: both models and the batch channels-last (``resnet_channels_last.md``);
- ``timm-best``: ours as created gets the NCHW batch as it comes, timm gets its best layout, a
  channels-last model and a batch converted before the timer starts (``resnet_timm_best.md``);
- ``both-best``: the same, with our model's kernels moved to channels-last once
  (``model.to(memory_format=torch.channels_last)``, which spares the convolutions a reordering of
  their kernels at every call) (``resnet_both_best.md``).

``--optimize`` times our models as :func:`attnvision.optimize_for_inference` returns them (BatchNorm
folded, channels-last), inference only (``resnet_<layout>_optimized.md``); with ``--compile`` also as
``optimize_for_inference(model, compile=True)`` returns them (inductor, weights frozen in), timed in the
same interleaved rounds after a warm-up call that compiles them. Our eager model as created runs in the
same rounds too ("vs our eager": its time over the optimized copy's).
"""
from __future__ import annotations

import argparse

import timm
import torch

from common import infer_fn, interleaved_medians, train_fn, write_results

import attnvision as av

ROWS = [("resnet50", None), ("resnet50_se", "se"), ("resnet50_eca", "eca"), ("resnet50_cbam", "cbam")]
CF, CL = torch.contiguous_format, torch.channels_last
LAYOUTS = {  # layout -> (results file, our model's layout, our input's, timm's model and input layout)
    "nchw": ("resnet", CF, CF, CF),
    "channels-last": ("resnet_channels_last", CL, CL, CL),
    "timm-best": ("resnet_timm_best", CF, CF, CL),
    "both-best": ("resnet_both_best", CL, CF, CL),
}
NOTES = {
    "nchw": "contiguous (NCHW) input for both; attnvision ResNets move it to channels-last memory themselves "
            "(their default `channels_last=True`), timm's run in its default layout",
    "channels-last": "channels-last models and input for both",
    "timm-best": "ours as created on the contiguous (NCHW) input a data loader gives (moved to channels-last inside "
                 "the timed call); timm in its best layout: a channels-last model on an input converted before timing",
    "both-best": "ours with its kernels moved to channels-last once (`model.to(memory_format=torch.channels_last)`) "
                 "on the contiguous (NCHW) input a data loader gives; timm in its best layout: a channels-last model "
                 "on an input converted before timing",
}


def build_pair(name, attn):
    ours = av.create_model(name)
    peer = timm.create_model("resnet50", pretrained=False, block_args=dict(attn_layer=attn) if attn else None)
    return ours, peer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller batch, no results file")
    parser.add_argument("--layout", choices=tuple(LAYOUTS), default="nchw")
    parser.add_argument("--channels-last", action="store_true", help="the same as --layout channels-last")
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--optimize", action="store_true",
                        help="ours through attnvision.optimize_for_inference, inference only")
    parser.add_argument("--compile", action="store_true",
                        help="with --optimize: also optimize_for_inference(model, compile=True)")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    if args.compile and not args.optimize:
        parser.error("--compile times the optimize_for_inference copies: it needs --optimize")
    layout = "channels-last" if args.channels_last else args.layout
    results, ours_model_fmt, ours_fmt, peer_fmt = LAYOUTS[layout]
    batch, repeats = (4, 3) if args.quick else (8, 7)
    x = torch.randn(batch, 3, args.size, args.size)
    x_ours, x_peer = x.contiguous(memory_format=ours_fmt), x.contiguous(memory_format=peer_fmt)
    y = torch.randint(0, 1000, (batch,))
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, attn in ROWS:
            torch.manual_seed(0)
            ours, peer = build_pair(name, attn)
            ours, peer = ours.to(memory_format=ours_model_fmt), peer.to(memory_format=peer_fmt)
            fns = {}
            if args.optimize:
                eager = ours.eval()
                ours = av.optimize_for_inference(eager)  # a copy: eager is kept
                fns["eager"] = infer_fn(eager, x_ours)
                if args.compile:
                    fns["compiled"] = infer_fn(av.optimize_for_inference(eager, compile=True), x_ours)
            fns.update(ours=infer_fn(ours, x_ours), timm=infer_fn(peer, x_peer))
            inf = interleaved_medians(fns, repeats)
            row = [name, str(threads), f"{batch / inf['ours']:.1f}", f"{batch / inf['timm']:.1f}",
                   f"{inf['timm'] / inf['ours']:.2f}x"]
            if args.optimize:
                row += [f"{inf['eager'] / inf['ours']:.2f}x"]
            if args.compile:
                row += [f"{batch / inf['compiled']:.1f}", f"{inf['timm'] / inf['compiled']:.2f}x",
                        f"{inf['eager'] / inf['compiled']:.2f}x"]
            if not args.optimize:
                trn = interleaved_medians({"ours": train_fn(ours, x_ours, y), "timm": train_fn(peer, x_peer, y)},
                                          repeats)
                row += [f"{batch / trn['ours']:.1f}", f"{batch / trn['timm']:.1f}", f"{trn['timm'] / trn['ours']:.2f}x"]
            print(" | ".join(row), flush=True)
            rows.append(row)
    headers = ["model", "threads", "infer img/s (ours)", "infer img/s (timm)", "ratio"]
    if not args.optimize:
        headers += ["train img/s (ours)", "train img/s (timm)", "ratio"]
    else:
        results += "_optimized"
        headers += ["vs our eager"]
        if args.compile:
            headers += ["compiled img/s (ours)", "ratio", "vs our eager"]
    command = "python benchmarks/bench_resnet.py" + (" --quick" if args.quick else "") + (
        f" --layout {layout}" if layout != "nchw" else "") + (" --optimize" if args.optimize else "") + (
        " --compile" if args.compile else "") + (f" --size {args.size}" if args.size != 224 else "") + (
        " --threads " + " ".join(map(str, args.threads)))
    ours_note = ("ours through `attnvision.optimize_for_inference` (BatchNorm folded), and \"vs our eager\": our model "
                 "as created, timed in the same rounds, over the optimized copy; " if args.optimize else "")
    if args.compile:
        ours_note += ("compiled: `optimize_for_inference(model, compile=True)` (inductor, weights frozen in; "
                      "compiled in the warm-up call); ")
    notes = (f"Batch {batch}, {args.size}×{args.size}, float32, {ours_note}{NOTES[layout]}; "
             "median of interleaved repeats. "
             "timm peers: `timm.create_model('resnet50', block_args=dict(attn_layer=KIND))`. Ratio = ours/timm "
             f"throughput. Produced by `{command}`.")
    if args.quick:
        from common import format_table
        print(format_table(headers, rows, markdown=True))
        print(notes)
        return
    print(write_results(results, f"ResNet-50 with attention vs timm {timm.__version__}", headers, rows, notes=notes))


if __name__ == "__main__":
    main()
