"""torch.compile (inductor) on CPU for one model of every family: the compiled model's outputs against
eager, its compile time, and the speed-up of inference and of a training step, in one process.

    python benchmarks/bench_compile.py            # writes benchmarks/results/compile.md
    python benchmarks/bench_compile.py --quick    # three families, fewer repeats, no file
    python benchmarks/bench_compile.py --family SASA --family VAN   # these families, no file

Every model is compiled with ``fullgraph=True`` (a graph break is an error). Eager and compiled
copies share their weights and alternate repeat by repeat (``interleaved_medians``). Speed-up =
eager time / compiled time (> 1: compiling pays).
"""
from __future__ import annotations

import argparse
import time

import torch

from common import interleaved_medians, write_results

import attnvision as av
from attnvision.profiling.benchmark import infer_fn, train_fn

# family -> (registered model, input side): the smallest registered model of each family
MODELS = {
    "ResNet + SE": ("resnet18_se", 128),
    "ResNet + ECA": ("resnet18_eca", 128),
    "ResNet + BAM": ("resnet18_bam", 128),
    "ResNet + CBAM": ("resnet18_cbam", 128),
    "MobileNetV2 + ECA": ("mobilenet_v2_eca", 128),
    "VAN": ("van_b0", 128),
    "CoAtNet": ("coatnet_0", 224),
    "SASA": ("sasa_resnet26", 128),
    "AA-ResNet": ("aa_resnet34", 128),
    "EA-AA-ResNet": ("ea_aa_resnet34", 128),
    "EA-ViT": ("ea_vit_tiny", 224),
}
QUICK = ("ResNet + CBAM", "VAN", "EA-ViT")


def build(name: str, side: int):
    kwargs = dict(num_classes=100)
    if name.startswith(("aa_", "ea_aa_")):
        kwargs["img_size"] = side
    return av.create_model(name, **kwargs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three families, fewer repeats, no results file")
    parser.add_argument("--family", action="append", choices=tuple(MODELS),
                        help="time only this family (repeatable); no results file")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    families = args.family or (QUICK if args.quick else tuple(MODELS))
    partial = args.quick or bool(args.family)
    repeats, batch = (3, args.batch_size) if args.quick else (7, args.batch_size)
    rows = []
    for family in families:
        name, side = MODELS[family]
        torch.manual_seed(0)
        eager = build(name, side).eval()
        x = torch.randn(batch, 3, side, side)
        y = torch.randint(0, 100, (batch,))
        torch._dynamo.reset()
        compiled = torch.compile(eager, fullgraph=True)
        start = time.perf_counter()
        with torch.no_grad():
            out, ref = compiled(x), eager(x)
        compile_infer = time.perf_counter() - start
        diff = (out - ref).abs().max().item() / ref.abs().max().item()
        inf = interleaved_medians({"eager": infer_fn(eager, x), "compiled": infer_fn(compiled, x)}, repeats)
        start = time.perf_counter()
        train_compiled = train_fn(compiled, x, y)
        train_compiled()  # the first training step compiles the joint forward/backward graph
        compile_train = time.perf_counter() - start
        trn = interleaved_medians({"eager": train_fn(eager, x, y), "compiled": train_compiled}, repeats)
        rows.append([family, f"`{name}`", f"{side}", f"{diff:.1e}", f"{compile_infer:.0f} + {compile_train:.0f}",
                     f"{batch / inf['eager']:.1f}", f"{batch / inf['compiled']:.1f}",
                     f"{inf['eager'] / inf['compiled']:.2f}x", f"{batch / trn['eager']:.1f}",
                     f"{batch / trn['compiled']:.1f}", f"{trn['eager'] / trn['compiled']:.2f}x"])
        print(" | ".join(rows[-1]), flush=True)
    headers = ["family", "model", "input", "max rel. diff", "compile s (infer + train)", "infer img/s eager",
               "compiled", "speed-up", "train img/s eager", "compiled", "speed-up"]
    notes = (f"Batch {batch}, float32, CPU, `torch.compile(model, fullgraph=True)` (inductor, default mode); "
             "eager and compiled share weights; medians of interleaved repeats after the compiling call. "
             "max rel. diff: largest |compiled − eager| of the logits over the largest |eager| logit. "
             "Produced by `python benchmarks/bench_compile.py" + (" --quick" if args.quick else "") + "`.")
    if partial:
        from common import format_table
        print(format_table(headers, rows, markdown=True))
        print(notes)
    else:
        print(write_results("compile", f"torch.compile (inductor) against eager, torch {torch.__version__}",
                            headers, rows, notes=notes))


if __name__ == "__main__":
    main()
