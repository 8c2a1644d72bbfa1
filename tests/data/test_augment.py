"""Classification augmentation: per-sample policies on one- and three-channel images, MixUp/CutMix labels, errors."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from attnvision.data import BatchMix, SampleAugment, create_dataset, mixup_cutmix
from attnvision.data.augment import InUnitRange, check_augment
from attnvision.data.transforms import pad_crop_transform

POLICIES = {
    "ra": SampleAugment(auto_augment="ra", aa_magnitude=15, aa_num_ops=3),
    "ta_wide": SampleAugment(auto_augment="ta_wide"),
    "augmix": SampleAugment(auto_augment="augmix", aa_magnitude=5),
    "color_jitter": SampleAugment(color_jitter=0.4),
    "random_erase": SampleAugment(random_erase=1.0),
    "all": SampleAugment(auto_augment="ra", color_jitter=0.3, random_erase=0.5),
}


def _changed(a: torch.Tensor, b: torch.Tensor) -> bool:
    return not torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_each_augmentation_keeps_the_digits_shape_and_dtype_and_changes_some_images(name):
    plain, aug = create_dataset("digits", "train"), create_dataset("digits", "train", sample_augment=POLICIES[name])
    images = [aug[i][0] for i in range(8)]
    assert all(x.shape == (1, 32, 32) and x.dtype == torch.float32 and torch.isfinite(x).all() for x in images)
    assert any(_changed(x, plain[i][0]) for i, x in enumerate(images))
    assert [aug[i][1] for i in range(8)] == [plain[i][1] for i in range(8)]
    torch.testing.assert_close(aug[3][0], aug[3][0])  # seeded per (seed, epoch, index)
    aug.set_epoch(1)
    assert any(_changed(aug[i][0], x) for i, x in enumerate(images))


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("channels", [1, 3])
def test_image_steps_take_uint8_and_unit_float_tensors_of_one_or_three_channels(name, channels):
    steps = POLICIES[name].image_steps()
    u8 = torch.randint(0, 256, (channels, 24, 20), dtype=torch.uint8)
    for x in (u8, u8.float() / 255):
        y = x
        for step in steps:
            y = step(y)
        assert y.shape == x.shape and y.dtype == x.dtype
        if x.is_floating_point():
            assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_pil_recipes_put_the_policy_before_and_the_erasing_after_normalisation(name):
    image = Image.fromarray(torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8).numpy())
    transform = pad_crop_transform(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), train=True, augment=POLICIES[name])
    x = transform(image)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    if POLICIES[name].random_erase == 1.0:  # the erased rectangle is 0, the mean colour, after normalisation
        assert (x == 0).any()
    assert len(pad_crop_transform(32, (0.5,) * 3, (0.25,) * 3, train=False, augment=POLICIES[name]).transforms) == 1


def test_in_unit_range_undoes_its_normalisation_exactly_around_identity_steps():
    mean, std = (0.2,), (0.3,)
    unit = torch.rand(1, 8, 8)
    x = (unit - 0.2) / 0.3
    torch.testing.assert_close(InUnitRange([], mean, std)(x), x)
    halve = InUnitRange([lambda t: t * 0.5], mean, std)(x)
    torch.testing.assert_close(halve, (unit * 0.5 - 0.2) / 0.3)


def test_synthetic_noise_takes_the_erasing_only_and_val_splits_refuse_sample_augment():
    x = create_dataset("synthetic:1x8x8", "train", sample_augment=SampleAugment(random_erase=1.0))[0][0]
    assert x.shape == (1, 8, 8)
    with pytest.raises(ValueError, match="data: auto_augment and color_jitter work on images in"):
        create_dataset("synthetic", "train", sample_augment=SampleAugment(auto_augment="ra"))
    with pytest.raises(ValueError, match="data: sample_augment is training augmentation, but the 'val' split"):
        create_dataset("digits", "val", sample_augment=SampleAugment(color_jitter=0.1))
    with pytest.raises(ValueError, match="data: sample_augment is for classification data"):
        create_dataset("cluttered-digits-det", "train", sample_augment=SampleAugment(color_jitter=0.1))


def _batch(n=16, classes=10, hw=12):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, hw, hw, generator=g), torch.randint(classes, (n,), generator=g)


@pytest.mark.parametrize("mixup,cutmix", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixed_labels_are_probabilities_summing_to_one_per_row(mixup, cutmix):
    x, y = _batch()
    mix = mixup_cutmix(10, mixup, cutmix)
    for seed in range(6):
        xm, ym = mix((x, y), seed=seed)
        assert xm.shape == x.shape and xm.dtype == x.dtype
        assert ym.shape == (16, 10) and ym.dtype == torch.float32 and (ym >= 0).all()
        torch.testing.assert_close(ym.sum(1), torch.ones(16))
        assert set(torch.nonzero(ym)[:, 1].tolist()) <= set(y.tolist())


def _lam(ym, y):
    """λ of each row: the weight of the row's own label where it differs from its partner's (the previous row)."""
    partner = y.roll(1)
    rows = (y != partner).nonzero().flatten()
    return rows, ym[rows, y[rows]]


def test_mixup_blends_each_image_with_the_previous_one_by_its_label_weight():
    x, y = _batch()
    xm, ym = BatchMix(10, mixup_alpha=0.4)((x, y), seed=3)
    rows, lam = _lam(ym, y)
    assert len(rows) and torch.allclose(lam, lam[0]) and 0 < lam[0] < 1  # one λ per batch
    torch.testing.assert_close(xm, lam[0] * x + (1 - lam[0]) * x.roll(1, 0))


def test_cutmix_pastes_one_box_of_the_previous_image_its_area_weighting_the_labels():
    x, y = _batch()
    xm, ym = BatchMix(10, cutmix_alpha=1.0)((x, y), seed=5)
    own = (xm == x).all(1)             # (B, H, W): pixels kept from the image itself
    other = (xm == x.roll(1, 0)).all(1)
    assert (own | other).all()
    kept = own[0].float().mean()       # the box is the same for every image
    assert 0 < kept < 1 and all(torch.equal(own[i], own[0]) for i in range(len(x)))
    rows, lam = _lam(ym, y)
    torch.testing.assert_close(lam, torch.full_like(lam, kept.item()))


def test_with_both_alphas_each_batch_is_mixed_up_or_cut_and_the_seed_decides():
    x, y = _batch()
    both, mixup = BatchMix(10, 0.4, 1.0), BatchMix(10, mixup_alpha=0.4)
    kinds = set()
    for seed in range(12):
        xm, _ = both((x, y), seed=seed)
        cut = bool(((xm == x).all(1) | (xm == x.roll(1, 0)).all(1)).all())
        kinds.add("cutmix" if cut else "mixup")
        again = both((x, y), seed=seed)[0]
        assert torch.equal(xm, again)
    assert kinds == {"mixup", "cutmix"}
    state = torch.get_rng_state()
    mixup((x, y), seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left as it was


@pytest.mark.parametrize("kwargs,match", [
    (dict(auto_augment="rand"), r"t: auto_augment must be None or one of \('ra', 'ta_wide', 'augmix'\), got 'rand"),
    (dict(auto_augment="ra", aa_magnitude=31), r"t: aa_magnitude must be an integer in 0..30 for auto_augment='ra'"),
    (dict(auto_augment="augmix", aa_magnitude=0),
     r"t: aa_magnitude must be an integer in 1..10 for auto_augment='augmix', got 0"),
    (dict(auto_augment="augmix", aa_num_ops=2), r"t: aa_num_ops is RandAugment's number of operations"),
    (dict(auto_augment="ta_wide", aa_magnitude=3),
     r"t: aa_magnitude applies to .* but auto_augment is 'ta_wide' \(TrivialAugment draws"),
    (dict(aa_num_ops=2),
     r"t: aa_num_ops applies to auto_augment 'ra' \(and aa_magnitude to 'augmix'\), but auto_augment is None$"),
    (dict(auto_augment="ra", aa_num_ops=0), r"t: aa_num_ops must be a positive integer, got 0"),
    (dict(random_erase=1.5), r"t: random_erase must be a number in \[0.0, 1.0\], got 1.5"),
    (dict(color_jitter=-0.1), r"t: color_jitter must be a number >= 0.0, got -0.1"),
    (dict(mixup_alpha=-1), r"t: mixup_alpha must be a number >= 0.0, got -1"),
    (dict(cutmix_alpha="1"), r"t: cutmix_alpha must be a number >= 0.0, got '1'"),
])
def test_bad_augmentation_settings_raise_one_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_augment("t", **kwargs)


def test_sample_augment_and_batch_mix_check_their_own_arguments():
    with pytest.raises(ValueError, match="SampleAugment: auto_augment must be None or one of"):
        SampleAugment(auto_augment="autoaugment")
    with pytest.raises(ValueError, match="BatchMix: mixup_alpha or cutmix_alpha must be > 0"):
        BatchMix(10)
    with pytest.raises(ValueError, match="BatchMix: num_classes must be an integer >= 2, got 1"):
        BatchMix(1, mixup_alpha=0.2)
    assert mixup_cutmix(10) is None and not SampleAugment()
