"""energy_in_box, pointing_game and explanation_scores."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from attnvision.explain import energy_in_box, explanation_scores, pointing_game


def test_energy_is_one_for_a_map_zero_outside_the_box():
    cam = torch.zeros(10, 12)
    cam[2:5, 3:9] = torch.rand(3, 6) + 0.1   # rows y0..y1−1 = 2..4, columns x0..x1−1 = 3..8
    assert float(energy_in_box(cam, (3, 2, 9, 5))) == pytest.approx(1.0)
    assert float(energy_in_box(cam, (3, 2, 9, 4))) < 1.0   # end-exclusive: row 4 is then outside


def test_energy_of_a_uniform_map_is_the_box_area_fraction():
    cam = torch.full((2, 10, 12), 0.3)
    boxes = torch.tensor([[0, 0, 6, 5], [2, 1, 3, 10]])
    torch.testing.assert_close(energy_in_box(cam, boxes), torch.tensor([30 / 120, 9 / 120], dtype=torch.float64))


def test_energy_is_scale_invariant_and_zero_for_an_empty_map():
    cam = torch.rand(8, 8)
    box = (1, 2, 5, 7)
    assert float(energy_in_box(cam, box)) == pytest.approx(float(energy_in_box(7 * cam, box)))
    assert float(energy_in_box(torch.zeros(8, 8), box)) == 0.0


def test_pointing_game_hits_only_when_every_peak_is_in_the_box():
    cam = torch.zeros(2, 8, 8)
    cam[0, 3, 4] = 1.0
    cam[1, 0, 0] = 1.0
    torch.testing.assert_close(pointing_game(cam, (4, 3, 5, 4)), torch.tensor([True, False]))
    assert not bool(pointing_game(torch.ones(8, 8), (0, 0, 8, 7)))
    assert bool(pointing_game(torch.ones(8, 8), (0, 0, 8, 8)))


@pytest.mark.parametrize("box, match", [
    ((0, 0, 9, 4), r"0 <= x0 < x1 <= 8"), ((3, 2, 3, 5), r"x0 < x1"), ((-1, 0, 2, 2), r"got \[\[-1, 0, 2, 2\]\]"),
    ((0.5, 0, 2, 2), "whole pixels"), ((0, 0, 2), r"\(B, 4\)"),
])
def test_bad_boxes_are_errors(box, match):
    with pytest.raises(ValueError, match=match):
        energy_in_box(torch.rand(8, 8), box)


def test_negative_maps_are_errors():
    with pytest.raises(ValueError, match="negative values"):
        pointing_game(torch.randn(8, 8) - 5, (0, 0, 2, 2))


class Brightness(nn.Module):
    """Class 0's score is the mean of ReLU(x), so its Grad-CAM is ReLU(x) itself."""

    def __init__(self):
        super().__init__()
        self.stage = nn.ReLU()
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        self.feature_info = [dict(num_chs=1, reduction=1, module="stage")]

    def forward(self, x):
        return self.fc(self.stage(x).mean((2, 3)))


def _blobs():
    """Two 1×16×16 images with a bright 3×3 blob; the first inside its box, the second outside."""
    images = torch.zeros(2, 1, 16, 16)
    images[0, 0, 5:8, 5:8] = 1.0
    images[1, 0, 12:15, 0:3] = 1.0
    boxes = torch.tensor([[4, 4, 10, 10], [4, 4, 10, 10]])
    return images, torch.zeros(2, dtype=torch.long), boxes


def test_explanation_scores_over_a_dataset_and_over_batches_agree_with_the_known_maps():
    images, labels, boxes = _blobs()
    scores = explanation_scores(Brightness(), TensorDataset(images, labels, boxes), batch_size=1)
    assert scores == {"energy_in_box": pytest.approx(0.5), "pointing_game": 0.5, "samples": 2}
    batches = [(images, labels, boxes)]
    assert explanation_scores(Brightness(), batches, max_samples=1) == {
        "energy_in_box": pytest.approx(1.0), "pointing_game": 1.0, "samples": 1}
    with pytest.raises(ValueError, match=r"expected batches of \(images, labels, boxes\)"):
        explanation_scores(Brightness(), [(images, labels)])


class TupleBoxes(torch.utils.data.Dataset):
    """Samples (image, label, (x0, y0, x1, y1)) with a plain tuple box, as a dataset may give them."""

    def __init__(self):
        self.images, self.labels, boxes = _blobs()
        self.boxes = [tuple(b) for b in boxes.tolist()]

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.images[i % 2], self.labels[i % 2], self.boxes[i % 2]


def test_explanation_scores_reads_collated_tuple_boxes_as_one_box_per_sample():
    # with 4 samples a batch's collated boxes are 4 columns of 4: they must not be read transposed
    scores = explanation_scores(Brightness(), TupleBoxes(), batch_size=4)
    assert scores == {"energy_in_box": pytest.approx(0.5), "pointing_game": 0.5, "samples": 4}


class BoxesAttribute(torch.utils.data.Dataset):
    """(image, label) samples with the boxes kept in a ``boxes`` attribute, as cluttered-digits does."""

    def __init__(self):
        self.images, self.labels, self.boxes = _blobs()

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def test_explanation_scores_reads_boxes_from_the_datasets_boxes_attribute():
    scores = explanation_scores(Brightness(), BoxesAttribute(), batch_size=2)
    assert scores == {"energy_in_box": pytest.approx(0.5), "pointing_game": 0.5, "samples": 2}
