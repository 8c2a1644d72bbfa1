"""Detection and segmentation metrics.

Detection: COCO's AP by torchmetrics' ``MeanAveragePrecision`` (the pycocotools backend: COCO's own
matcher and 101-point interpolation) — ``map`` (AP@[.50:.95]), ``map_50``, ``map_75``,
``map_small/medium/large``; with ``masks`` the same over instance masks (``mask_`` prefix).

Segmentation: a confusion matrix over the pixels whose target is not ``ignore_index``:
``IoU_c = TP_c / (TP_c + FP_c + FN_c)``, ``mIoU`` the mean over the classes present in the
predictions or targets, pixel accuracy ``Σ_c TP_c / Σ pixels``.
"""
from __future__ import annotations

import torch

_BOX_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")


class DetectionMetrics:
    """Accumulate detector outputs and targets; ``compute()`` gives COCO AP numbers (floats, -1 when undefined).

    Args:
        masks: also compute mask AP (predictions carry ``masks`` (N, 1, H, W) probabilities, as Mask R-CNN
            returns, thresholded at 0.5; targets ``masks`` (N, H, W)).
    """

    def __init__(self, *, masks: bool = False):
        from torchmetrics.detection import MeanAveragePrecision

        self.masks = masks
        self.box = MeanAveragePrecision(iou_type="bbox", backend="pycocotools")
        self.segm = MeanAveragePrecision(iou_type="segm", backend="pycocotools") if masks else None

    def update(self, preds: list[dict], targets: list[dict]) -> None:
        if len(preds) != len(targets):
            raise ValueError(f"DetectionMetrics: {len(preds)} predictions for {len(targets)} targets")
        box_t = [dict(boxes=t["boxes"].as_subclass(torch.Tensor).float().cpu(), labels=t["labels"].cpu(),
                      iscrowd=t.get("iscrowd", torch.zeros_like(t["labels"])).cpu()) for t in targets]
        box_p = [dict(boxes=p["boxes"].detach().float().cpu(), scores=p["scores"].detach().cpu(),
                      labels=p["labels"].cpu()) for p in preds]
        self.box.update(box_p, box_t)
        if self.segm is not None:
            seg_p = [dict(masks=(p["masks"].detach()[:, 0] > 0.5).cpu(), scores=p["scores"].detach().cpu(),
                          labels=p["labels"].cpu()) for p in preds]
            seg_t = [dict(masks=t["masks"].as_subclass(torch.Tensor).bool().cpu(), labels=t["labels"].cpu(),
                          iscrowd=bt["iscrowd"]) for t, bt in zip(targets, box_t)]
            self.segm.update(seg_p, seg_t)

    def compute(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self.box.compute().items() if k in _BOX_KEYS}
        if self.segm is not None:
            out.update({f"mask_{k}": float(v) for k, v in self.segm.compute().items() if k in _BOX_KEYS})
        return out


class SegmentationMetrics:
    """Accumulate a (num_classes × num_classes) confusion matrix; ``compute()`` gives mIoU, pixel accuracy
    and per-class IoU (NaN for a class absent from both predictions and targets)."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"SegmentationMetrics: num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # [target, prediction]

    def update(self, logits_or_pred: torch.Tensor, target: torch.Tensor) -> None:
        """``logits (B, K, H, W)`` or predicted classes ``(B, H, W)``, and targets ``(B, H, W)``."""
        pred = logits_or_pred.argmax(1) if logits_or_pred.ndim == target.ndim + 1 else logits_or_pred
        if pred.shape != target.shape:
            raise ValueError(f"SegmentationMetrics: predictions {tuple(pred.shape)} and targets "
                             f"{tuple(target.shape)} differ in shape")
        valid = target != self.ignore_index
        t, p = target[valid].long().cpu(), pred[valid].long().cpu()
        if len(t) and (t.min() < 0 or t.max() >= self.num_classes):
            raise ValueError(f"SegmentationMetrics: target classes must be in 0…{self.num_classes - 1} or "
                             f"{self.ignore_index}, got {sorted(t.unique().tolist())[:10]}")
        self.confusion += torch.bincount(t * self.num_classes + p, minlength=self.num_classes ** 2).view(
            self.num_classes, self.num_classes)

    def compute(self) -> dict:
        cm = self.confusion.double()
        tp = cm.diag()
        union = cm.sum(0) + cm.sum(1) - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        total = cm.sum()
        return dict(miou=float(iou.nanmean()) if (union > 0).any() else float("nan"),
                    pixel_acc=float(tp.sum() / total) if total > 0 else float("nan"),
                    per_class_iou=iou.tolist())
