"""Dense prediction on attnvision backbones: torchvision's detectors (:func:`create_detector`),
Semantic FPN and UperNet segmenters (:func:`create_segmenter`), their metrics and per-task training pieces."""
from .backbone import FeaturePyramidBackbone, build_body, freeze_batchnorm, freeze_stages
from .detection import create_detector, detection_difference, from_torchvision
from .metrics import DetectionMetrics, SegmentationMetrics
from .segmentation import Segmenter, SemanticFPNHead, UperNetHead, create_segmenter
from .tasks import TASKS, DetectionTask, SegmentationTask

__all__ = ["DetectionMetrics", "DetectionTask", "FeaturePyramidBackbone", "SegmentationMetrics", "SegmentationTask",
           "Segmenter", "SemanticFPNHead", "TASKS", "UperNetHead", "build_body", "create_detector",
           "create_segmenter", "detection_difference", "freeze_batchnorm", "freeze_stages", "from_torchvision"]
