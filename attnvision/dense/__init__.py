"""Dense prediction on attnvision backbones: torchvision's detectors (:func:`create_detector`),
Semantic FPN and UperNet segmenters (:func:`create_segmenter`) and their metrics. The training tasks
that use them are in :mod:`attnvision.tasks.dense`."""
from .backbone import FeaturePyramidBackbone, build_body, freeze_batchnorm, freeze_stages
from .detection import create_detector, detection_difference, from_torchvision
from .metrics import DetectionMetrics, SegmentationMetrics
from .segmentation import Segmenter, SemanticFPNHead, UperNetHead, create_segmenter

__all__ = ["DetectionMetrics", "FeaturePyramidBackbone", "SegmentationMetrics", "Segmenter", "SemanticFPNHead",
           "UperNetHead", "build_body", "create_detector", "create_segmenter", "detection_difference",
           "freeze_batchnorm", "freeze_stages", "from_torchvision"]
