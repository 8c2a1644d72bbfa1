"""Grad-CAM for a detection and for a segmentation class: the same maps as the classifier Grad-CAM of a
module whose one logit is that score, in the input image's pixels."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attnvision.data.dense import ClutteredDigitsDense
from attnvision.dense import create_detector, create_segmenter
from attnvision.explain import gradcam
from attnvision.explain.dense import dense_layer, detection_cam, segmentation_cam

SMALL = dict(fpn_channels=16, backbone_kwargs=dict(stem="imagenet"))


def _detector(size: int = 64):
    torch.manual_seed(0)
    return create_detector("fasterrcnn", "resnet20", 11, box_head_width=32, min_size=size, max_size=size,
                           box_score_thresh=0.0, **SMALL).eval()


class _OneScore(nn.Module):
    """A "classifier" whose single logit is the score of detection ``k``."""

    def __init__(self, detector, k):
        super().__init__()
        self.detector, self.k = detector, k

    def forward(self, images):
        return self.detector(list(images))[0]["scores"][self.k].view(1, 1)


def test_detection_cam_is_gradcam_of_the_detection_score():
    detector = _detector()
    image = ClutteredDigitsDense("val", "detection", length=1)[0][0].as_subclass(torch.Tensor)
    name, _ = dense_layer(detector)
    assert name == "backbone.body.model.layer3"  # resnet20's last stage
    for k in (0, 2):
        cam, detections = detection_cam(detector, image, k, normalize=False)
        reference = gradcam(_OneScore(detector, k), image[None], target=0, layer="detector." + name,
                            normalize=False)[0]
        torch.testing.assert_close(cam, reference)
        assert len(detections["scores"]) > 2 and not detections["scores"].requires_grad
    assert not torch.equal(detection_cam(detector, image, 0)[0], detection_cam(detector, image, 2)[0])


def test_detection_cam_comes_back_in_the_input_images_pixels():
    detector = _detector(size=96)  # resized to 96 on the short side and padded to a multiple of 32
    image = torch.rand(3, 40, 70)
    cam, _ = detection_cam(detector, image, 0)
    assert cam.shape == (40, 70) and cam.max() == 1.0 and cam.min() >= 0


def test_detection_cam_refuses_a_detection_that_is_not_there():
    detector = _detector()
    image = torch.rand(3, 64, 64)
    count = len(detector([image])[0]["scores"])
    with pytest.raises(ValueError, match=rf"detection_cam: detection must be an index in \[0, {count}\)"):
        detection_cam(detector, image, count)


def test_segmentation_cam_is_gradcam_of_the_class_logits_summed_over_the_region():
    torch.manual_seed(0)
    segmenter = create_segmenter("semantic_fpn", "resnet20", 11, channels=16, groups=4, **SMALL).eval()
    images = torch.stack([ClutteredDigitsDense("val", "segmentation", length=2)[i][0] for i in range(2)])

    class Summed(nn.Module):
        def __init__(self):
            super().__init__()
            self.segmenter = segmenter

        def forward(self, x):
            return (self.segmenter(x) * region[:, None]).sum((2, 3))              # (B, K)

    region = torch.zeros(2, 64, 64, dtype=torch.bool)
    region[:, 10:40, 20:50] = True
    cam, logits = segmentation_cam(segmenter, images, 3, mask=region, normalize=False)
    reference = gradcam(Summed(), images, target=3, layer="segmenter.body.model.layer3", normalize=False)
    torch.testing.assert_close(cam, reference)
    assert logits.shape == (2, 11, 64, 64)
    with pytest.raises(ValueError, match=r"segmentation_cam: target must be a class in \[0, 11\), got 11"):
        segmentation_cam(segmenter, images, 11)
