"""ResNet-50 with SE / ECA / CBAM: our models against timm's, in the same process.

    python benchmarks/bench_resnet.py [--quick] [--channels-last]

Inference (eval, no grad) and a training step (forward, backward, SGD step), images per
second, ratio ours/timm (> 1 means we are faster). Writes benchmarks/results/resnet.md.
"""
from __future__ import annotations

import argparse

import timm
import torch

from common import infer_fn, interleaved_medians, train_fn, write_results

import attnvision as av

ROWS = [("resnet50", None), ("resnet50_se", "se"), ("resnet50_eca", "eca"), ("resnet50_cbam", "cbam")]


def build_pair(name, attn):
    ours = av.create_model(name)
    peer = timm.create_model("resnet50", pretrained=False, block_args=dict(attn_layer=attn) if attn else None)
    return ours, peer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller batch")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    batch, repeats = (4, 3) if args.quick else (8, 7)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, args.size, args.size).to(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,))
    rows = []
    for name, attn in ROWS:
        torch.manual_seed(0)
        ours, peer = (m.to(memory_format=fmt) for m in build_pair(name, attn))
        inf = interleaved_medians({"ours": infer_fn(ours, x), "timm": infer_fn(peer, x)}, repeats)
        trn = interleaved_medians({"ours": train_fn(ours, x, y), "timm": train_fn(peer, x, y)}, max(3, repeats // 2))
        row = [name, f"{batch / inf['ours']:.1f}", f"{batch / inf['timm']:.1f}", f"{inf['timm'] / inf['ours']:.2f}x",
               f"{batch / trn['ours']:.1f}", f"{batch / trn['timm']:.1f}", f"{trn['timm'] / trn['ours']:.2f}x"]
        print(" | ".join(row), flush=True)
        rows.append(row)
    layout = "channels_last" if args.channels_last else "contiguous (NCHW)"
    text = write_results(
        "resnet" + ("_channels_last" if args.channels_last else ""),
        f"ResNet-50 with attention vs timm {timm.__version__}",
        ["model", "infer img/s (ours)", "infer img/s (timm)", "ratio", "train img/s (ours)", "train img/s (timm)",
         "ratio"], rows,
        notes=f"Batch {batch}, {args.size}×{args.size}, {layout} input, float32, median of interleaved repeats. "
              "attnvision ResNets move the input to channels-last memory themselves (their default "
              "`channels_last=True`); timm's run on the input as given. "
              "timm peers: `timm.create_model('resnet50', block_args=dict(attn_layer=KIND))`. Ratio = ours/timm "
              "throughput. Produced by `python benchmarks/bench_resnet.py"
              + (" --quick" if args.quick else "") + (" --channels-last" if args.channels_last else "") + "`.")
    print(text)


if __name__ == "__main__":
    main()
