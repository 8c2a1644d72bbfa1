"""Training with the classification augmentations: one step on digits with each flag, soft-target loss,
seeding, the command-line flags and the settings refused."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset

from attnvision.cli.main import main
from attnvision.data import create_dataset
from attnvision.tasks import ClassificationTask
from attnvision.train import TrainConfig, train

FLAGS = {
    "auto_augment=ra": dict(auto_augment="ra", aa_magnitude=12, aa_num_ops=3),
    "auto_augment=ta_wide": dict(auto_augment="ta_wide"),
    "auto_augment=augmix": dict(auto_augment="augmix", aa_magnitude=4),
    "color_jitter": dict(color_jitter=0.4),
    "random_erase": dict(random_erase=1.0),
    "mixup_alpha": dict(mixup_alpha=0.4),
    "cutmix_alpha": dict(cutmix_alpha=1.0),
    "mixup_alpha+cutmix_alpha": dict(mixup_alpha=0.4, cutmix_alpha=1.0, label_smoothing=0.1),
}


class Recorder(nn.Module):
    """A tiny classifier of one-channel images that keeps each training batch it sees and its logits."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.Linear(4, 10)
        self.seen, self.logits = [], []

    def forward(self, x):
        out = self.fc(torch.relu(self.conv(x)).mean((2, 3)))
        if self.training:
            self.seen.append(x.detach().clone())
            self.logits.append(out.detach().clone())
        return out


class _Stop(Exception):
    pass


@pytest.fixture
def losses(monkeypatch):
    """The (targets, loss) of every training step."""
    seen, forward = [], ClassificationTask.forward

    def recording(self, net, batch, cfg, device):
        loss, sums = forward(self, net, batch, cfg, device)
        seen.append((batch[1], loss.detach()))
        return loss, sums

    monkeypatch.setattr(ClassificationTask, "forward", recording)
    return seen


def _one_step(seed=0, **flags) -> Recorder:
    """One optimiser step on digits (train set built from cfg.data with its augmentation), then stop."""
    torch.manual_seed(0)
    model = Recorder()
    cfg = TrainConfig(model="tiny", data="digits", epochs=1, batch_size=32, lr=0.05, progress=False, threads=1,
                      seed=seed, **flags)

    def stop(step):
        assert step == 1
        raise _Stop

    with pytest.raises(_Stop):
        train(cfg, model=model, val_set=Subset(create_dataset("digits", "val"), range(8)), on_step=stop)
    return model


@pytest.fixture(scope="module")
def plain_batch():
    return _one_step().seen[0]


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_one_training_step_with_each_flag_sees_augmented_images_and_a_finite_loss(name, plain_batch, losses):
    model = _one_step(**FLAGS[name])
    (x,) = model.seen
    assert x.shape == plain_batch.shape == (32, 1, 32, 32) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert not torch.allclose(x, plain_batch, atol=1e-5)
    (y, loss), = losses
    (logits,) = model.logits
    assert torch.isfinite(loss)
    if "mixup_alpha" in FLAGS[name] or "cutmix_alpha" in FLAGS[name]:
        assert y.shape == (32, 10) and y.is_floating_point()
        torch.testing.assert_close(y.sum(1), torch.ones(32))
        assert (y.max(1).values < 1).any()  # some rows mix two classes
        eps = FLAGS[name].get("label_smoothing", 0.0)
        target = y * (1 - eps) + eps / 10  # label smoothing of a probability target
        torch.testing.assert_close(loss, -(target * F.log_softmax(logits, 1)).sum(1).mean(), rtol=1e-5, atol=1e-6)
    else:
        assert y.shape == (32,) and y.dtype == torch.int64


def test_batch_mixing_is_the_same_for_the_same_seed(losses):
    a, b = _one_step(mixup_alpha=0.4, cutmix_alpha=1.0), _one_step(mixup_alpha=0.4, cutmix_alpha=1.0)
    assert torch.equal(a.seen[0], b.seen[0]) and torch.equal(losses[0][0], losses[1][0])
    c = _one_step(seed=1, mixup_alpha=0.4, cutmix_alpha=1.0)
    assert not torch.equal(a.seen[0], c.seen[0]) and not torch.equal(losses[0][0], losses[2][0])


def test_a_whole_tiny_run_with_every_flag_writes_its_recipe(tmp_path):
    out = tmp_path / "run"
    summary = train(TrainConfig(model="tiny", data="digits", epochs=1, batch_size=719, lr=0.05, progress=False,
                                threads=1, out=str(out), auto_augment="ra", color_jitter=0.2, random_erase=0.25,
                                mixup_alpha=0.2, cutmix_alpha=1.0), model=Recorder())
    assert summary["epochs_done"] == 1 and 0 <= summary["val_acc1"] <= 100
    config = json.loads((out / "run.json").read_text())["config"]
    assert {k: config[k] for k in ("auto_augment", "color_jitter", "random_erase", "mixup_alpha", "cutmix_alpha")} \
        == dict(auto_augment="ra", color_jitter=0.2, random_erase=0.25, mixup_alpha=0.2, cutmix_alpha=1.0)


def test_command_line_flags_reach_the_config(monkeypatch, tmp_path):
    seen = []

    def fake_train(cfg):
        seen.append(cfg)
        return {"interrupted": True}

    monkeypatch.setattr("attnvision.cli.train.train", fake_train)
    main(["train", "--model", "resnet20", "--epochs", "1", "--out", str(tmp_path / "r"), "--auto-augment", "ra",
          "--aa-magnitude", "7", "--aa-num-ops", "1", "--color-jitter", "0.3", "--random-erase", "0.2",
          "--mixup-alpha", "0.8", "--cutmix-alpha", "1.0"])
    (cfg,) = seen
    assert (cfg.auto_augment, cfg.aa_magnitude, cfg.aa_num_ops, cfg.color_jitter, cfg.random_erase, cfg.mixup_alpha,
            cfg.cutmix_alpha) == ("ra", 7, 1, 0.3, 0.2, 0.8, 1.0)


def test_mixing_with_a_dense_task_is_refused_before_anything_is_built():
    cfg = TrainConfig(task="detection", model="fasterrcnn", backbone="resnet18", data="cluttered-digits-det",
                      epochs=1, progress=False, mixup_alpha=0.2, cutmix_alpha=1.0)
    with pytest.raises(ValueError, match=r"^train: mixup_alpha, cutmix_alpha are image-classification augmentations; "
                                         r"--task detection does not take them$"):
        train(cfg)


def test_bad_values_and_a_train_set_of_its_own_are_refused():
    with pytest.raises(ValueError, match=r"train: auto_augment must be None or one of"):
        train(TrainConfig(model="tiny", epochs=1, progress=False, auto_augment="randaugment"), model=Recorder())
    with pytest.raises(ValueError, match=r"train: auto_augment, color_jitter and random_erase are added to the "
                                         r"datasets built from cfg.data"):
        train(TrainConfig(model="tiny", epochs=1, progress=False, color_jitter=0.2), model=Recorder(),
              train_set=create_dataset("digits", "train"))
