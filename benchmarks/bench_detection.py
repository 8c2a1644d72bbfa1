"""Faster R-CNN ResNet-50-FPN: ours (``create_detector("fasterrcnn", "resnet50")``) against torchvision's
``fasterrcnn_resnet50_fpn`` with identical weights, in the same process.

    python benchmarks/bench_detection.py            # 800-pixel images, writes benchmarks/results/detection.md
    python benchmarks/bench_detection.py --quick    # 320-pixel images, fewer repeats, no file

torchvision's random weights are loaded into ours with ``load_checkpoint(source="official")``
(the ``from_torchvision`` key converter); boxes, scores and labels are checked to agree before
timing (matched by label and box: ours runs on channels-last memory, where nearly tied scores may swap).
Inference in eval mode; training step: the loss dict's sum, backward, SGD step. Ratio =
torchvision's time / ours (> 1 means we are faster).
"""
from __future__ import annotations

import argparse

import torch
import torchvision

from common import interleaved_medians, write_results

from attnvision.weights import load_checkpoint
from attnvision.dense import create_detector, detection_difference


def build_pair(num_classes: int, size: int):
    peer = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                                num_classes=num_classes, min_size=size, max_size=size)
    ours = create_detector("fasterrcnn", "resnet50", num_classes, min_size=size, max_size=size)
    load_checkpoint(ours, peer.state_dict(), source="official")
    return ours, peer


def check_equal(ours, peer, images, size: int) -> tuple[float, float]:
    """Largest box and score differences, detections matched by label and box; raises when they disagree
    by more than float32 sums in another order explain (3e-4 of the image side for boxes: random
    weights regress boxes through exp(), which amplifies the last bits of the features)."""
    with torch.inference_mode():
        pairs = [detection_difference(o, p) for o, p in zip(ours.eval()(images), peer.eval()(images))]
    box, score = max(d[0] for d in pairs), max(d[1] for d in pairs)
    if box > 3e-4 * size or score > 1e-3:
        raise RuntimeError(f"bench_detection: detections differ (boxes by {box:.3g} pixels, scores by {score:.3g})")
    return box, score


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="320-pixel images, fewer repeats, no results file")
    args = parser.parse_args()
    size, batch, repeats = (320, 1, 3) if args.quick else (800, 2, 7)
    torch.manual_seed(0)
    ours, peer = build_pair(91, size)
    for m in (ours, peer):
        m.roi_heads.score_thresh = 0.0  # random weights score low: keep every detection in the comparison
    images = [torch.rand(3, size, size) for _ in range(batch)]
    box_diff, score_diff = check_equal(ours, peer, images, size)
    targets = [dict(boxes=torch.tensor([[10.0, 20.0, size / 2, size / 2]]), labels=torch.tensor([1]))] * batch

    def infer(model):
        def run():
            with torch.inference_mode():
                model.eval()(images)
        return run

    def train(model):
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

        def run():
            opt.zero_grad(set_to_none=True)
            sum(model.train()(images, targets).values()).backward()
            opt.step()
        return run

    inf = interleaved_medians({"ours": infer(ours), "torchvision": infer(peer)}, repeats)
    trn = interleaved_medians({"ours": train(ours), "torchvision": train(peer)}, max(2, repeats // 2))
    row = ["fasterrcnn_resnet50_fpn", f"{inf['ours']:.3f}", f"{inf['torchvision']:.3f}",
           f"{inf['torchvision'] / inf['ours']:.2f}x", f"{trn['ours']:.3f}", f"{trn['torchvision']:.3f}",
           f"{trn['torchvision'] / trn['ours']:.2f}x"]
    headers = ["model", "infer s (ours)", "infer s (torchvision)", "ratio", "train step s (ours)",
               "train step s (torchvision)", "ratio"]
    notes = (f"{batch} image(s) of {size}×{size}, min_size=max_size={size}, float32, median of interleaved repeats; "
             f"detections matched by label and box: largest box difference {box_diff:.2e} pixels, "
             f"score difference {score_diff:.2e}. Ours runs its ResNet on channels-last memory (the default). "
             "Produced by `python benchmarks/bench_detection.py" + (" --quick" if args.quick else "") + "`.")
    if args.quick:
        from common import format_table
        print(format_table(headers, [row], markdown=True))
        print(notes)
    else:
        print(write_results("detection", f"Faster R-CNN ResNet-50-FPN vs torchvision {torchvision.__version__}",
                            headers, [row], notes=notes))


if __name__ == "__main__":
    main()
