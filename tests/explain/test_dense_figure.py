"""dense_figure of a detection: its title says which detection the map explains, also when that one
scores below the drawing threshold (it read "0 detection(s) with score ≥ 0.5" over the map of one at 0.43)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba

from attnvision.explain.figure import dense_figure

SCORES = [0.91, 0.62, 0.43, 0.2]


def _figure(scores, chosen, thresh=0.5):
    n = len(scores)
    boxes = torch.tensor([[2.0 + 4 * k, 2.0, 10.0 + 4 * k, 12.0] for k in range(n)])
    detections = dict(boxes=boxes, scores=torch.tensor(scores), labels=torch.arange(1, n + 1))
    cam = torch.rand(32, 32)
    fig = dense_figure(np.zeros((32, 32, 3)), cam, detections=detections, chosen=chosen, score_thresh=thresh,
                       class_names=[f"c{k}" for k in range(n + 1)])
    left, right = fig.get_axes()
    return left, right


def _boxes(ax, color):
    return sum(p.get_edgecolor() == to_rgba(color) for p in ax.patches)


@pytest.mark.parametrize("chosen", [2, 3])
def test_a_detection_below_the_threshold_is_named_with_its_score_when_explained(chosen):
    left, right = _figure(SCORES, chosen)
    above = sum(s >= 0.5 for s in SCORES)
    title = left.get_title()
    assert f"detection {chosen}, score {SCORES[chosen]:.2f}, below 0.5" in title and f"({above} above)" in title
    assert _boxes(left, "red") == 1 and _boxes(left, "lime") == above   # what the title counts is drawn
    assert right.get_title().startswith(f"Grad-CAM of detection {chosen}: c{chosen + 1} {SCORES[chosen]:.2f}")


def test_the_only_detection_below_the_threshold_is_not_called_zero_detections():
    left, _ = _figure([0.43], 0)
    title = left.get_title()
    assert title == "explained in red: detection 0, score 0.43, below 0.5 (none above)"
    assert _boxes(left, "red") == 1 and _boxes(left, "lime") == 0


def test_an_explained_detection_above_the_threshold_is_counted_with_the_others():
    left, _ = _figure(SCORES, 1)
    above = sum(s >= 0.5 for s in SCORES)
    assert left.get_title() == f"{above} detections with score ≥ 0.5; red: detection 1, explained"
    assert _boxes(left, "red") == 1 and _boxes(left, "lime") == above - 1
    left, _ = _figure([0.7], 0)
    assert left.get_title() == "1 detection with score ≥ 0.5; red: detection 0, explained"
