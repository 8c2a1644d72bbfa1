"""cluttered-digits: fresh training canvases every epoch, a fixed validation set from held-out digits."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from attnvision.data import ClutteredDigits, cluttered, create_dataset
from attnvision.data.digits import digits_8x8, split_indices
from attnvision.train.trainer import TrainConfig, train


def test_training_canvases_are_a_function_of_seed_epoch_and_index():
    a, b = ClutteredDigits("train", copies=1, seed=3), ClutteredDigits("train", copies=1, seed=3)
    epoch0 = a.raw.clone()
    a.set_epoch(2)
    b.set_epoch(2)
    assert torch.equal(a.raw, b.raw) and torch.equal(a.boxes, b.boxes) and torch.equal(a[17][0], b[17][0])
    assert not torch.equal(a.raw, epoch0)                       # a new epoch draws new canvases
    a.set_epoch(0)
    assert torch.equal(a.raw, epoch0)                           # and any epoch can be drawn again (resume)
    assert not torch.equal(ClutteredDigits("train", copies=1, seed=4).raw, epoch0)
    # every epoch shows each training digit once per copy, in the same order: only place, scale and clutter change
    labels = digits_8x8()[1][split_indices("train")]
    assert torch.equal(a.labels, labels) and torch.equal(b.labels, labels)


def test_the_validation_set_is_fixed_large_and_built_from_held_out_digits_only(monkeypatch):
    seen = []
    real_render = cluttered.render

    def spy(digit_ids, clutter_pool, clutter, g):
        seen.append((set(digit_ids.tolist()), set(clutter_pool.tolist())))
        return real_render(digit_ids, clutter_pool, clutter, g)

    monkeypatch.setattr(cluttered, "render", spy)
    cluttered._validation_set.cache_clear()
    val = ClutteredDigits("val", seed=5)
    train_set = ClutteredDigits("train", copies=1, seed=5)
    train_set.set_epoch(1)
    cluttered._validation_set.cache_clear()
    held_out, train_digits = set(split_indices("val").tolist()), set(split_indices("train").tolist())
    val_digits, val_clutter = seen[-3]  # calls: reference stats are cached; val, train epoch 0, train epoch 1
    assert val_digits == held_out and val_clutter == held_out
    for digits, clutter in seen[-2:]:
        assert digits <= train_digits and clutter <= train_digits
    assert len(val) == 6 * 360 >= 2000
    val.set_epoch(3)  # the validation set ignores the epoch and the seed
    assert torch.equal(val.raw, ClutteredDigits("val", seed=0).raw)
    x0, y0, x1, y1 = val.box(2000)
    assert torch.equal(val.boxes[2000], torch.tensor([x0, y0, x1, y1]))


def test_the_training_wrapper_passes_the_epoch_and_the_run_seed_to_the_canvases():
    d = create_dataset("cluttered-digits", "train", seed=2)
    first = d[0][0].clone()
    d.set_epoch(1)
    assert not torch.equal(d[0][0], first) and d.base.epoch == 1
    assert not torch.equal(create_dataset("cluttered-digits", "train", seed=3)[0][0], first)
    val = create_dataset("cluttered-digits", "val", seed=2)
    assert torch.equal(val[0][0], create_dataset("cluttered-digits", "val", seed=3)[0][0])


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 5, stride=4), nn.BatchNorm2d(4), nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def _run(out, stop_at=None, resume=False):
    cfg = TrainConfig(model="net", data="cluttered-digits", epochs=3, batch_size=256, lr=0.05, deterministic=True,
                      progress=False, threads=1, out=str(out), resume=resume)

    def on_step(step):
        if step == stop_at:
            raise KeyboardInterrupt  # a crash in the middle of epoch 2 (16 steps an epoch)

    torch.manual_seed(0)
    sets = (create_dataset("cluttered-digits", "train"), create_dataset("cluttered-digits", "val"))
    return train(cfg, model=_Net(), train_set=sets[0], val_set=sets[1], on_step=on_step)


def test_resume_with_fresh_canvases_ends_on_the_same_weights(tmp_path):
    full = _run(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "cut", stop_at=20)
    resumed = _run(tmp_path / "cut", resume=True)  # restarts from the end of epoch 1: epochs 2 and 3 redrawn
    a, b = load_file(tmp_path / "full" / "last.safetensors"), load_file(tmp_path / "cut" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["val_acc1"] == full["val_acc1"]
