"""Classification augmentation beyond the crops and flips: torchvision's ``transforms.v2`` policies.

Per sample (train split only, seeded per sample like every transform of :class:`.transforms.Augmented`):

- ``auto_augment``: ``"ra"``, RandAugment (Cubuk et al., 2020): ``num_ops`` operations drawn
  uniformly, each at ``magnitude`` of 31 bins (default 2 at 9, torchvision's reference recipe);
  ``"ta_wide"``, TrivialAugment Wide (Müller and Hutter, 2021): one operation, its magnitude
  drawn at random (no options); ``"augmix"``, AugMix (Hendrycks et al., 2020): three chains of
  one to three operations at ``severity`` (``magnitude``, 1..10, default 3), mixed by Dirichlet
  weights and blended with the image by a Beta(1, 1) weight. Geometric operations fill with 0
  (black, blank paper for the digits) and interpolate bilinearly.
- ``color_jitter`` S: brightness, contrast and saturation factors drawn from [1 − S, 1 + S]
  (timm's float form; saturation leaves one-channel images as they are), after the policy.
- ``random_erase`` P: with probability P, one rectangle of 2–33% of the image, aspect ratio
  0.3–3.3, set to 0 after normalisation, i.e. to the mean colour (Zhong et al., 2020; torchvision's
  reference recipe).

The policies and the jitter work on images in [0, 1] (or PIL images, uint8 tensors), which v2 accepts
with one or three channels. The built-in datasets hand out normalised float tensors:
:class:`InUnitRange` takes them back to [0, 1] by their mean and std, applies the steps there, and
normalises again. On ``cluttered-digits`` the geometric operations move a training digit off its
recorded box (``dataset.boxes`` describes the canvas before augmentation; the validation split is
never augmented).

Per batch (:func:`mixup_cutmix`): MixUp (Zhang et al., 2018), x̃ = λ x_i + (1 − λ) x_j and
ỹ = λ y_i + (1 − λ) y_j with λ ~ Beta(α, α), and CutMix (Yun et al., 2019), a box of area (1 − λ)
pasted from x_j, ỹ weighted by the areas kept; j is the previous sample of the batch (torchvision's
``roll``). With both α > 0, each batch takes one of the two with probability ½ (timm's ``switch_prob``
default). Labels come out as (B, num_classes) rows of probabilities.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.transforms import InterpolationMode, v2

AUTO_AUGMENTS = ("ra", "ta_wide", "augmix")
RA_BINS = 31                  # RandAugment's magnitude bins: magnitude in 0..30
AUGMIX_SEVERITIES = (1, 10)
AUGMENT_FIELDS = ("auto_augment", "aa_magnitude", "aa_num_ops", "color_jitter", "random_erase", "mixup_alpha",
                  "cutmix_alpha")


def _number(who: str, name: str, value, low: float, high: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        span = f"in [{low}, {high}]" if high != math.inf else f">= {low}"
        raise ValueError(f"{who}: {name} must be a number {span}, got {value!r}")


def check_augment(who: str, *, auto_augment=None, aa_magnitude=None, aa_num_ops=None, color_jitter=0.0,
                  random_erase=0.0, mixup_alpha=0.0, cutmix_alpha=0.0) -> None:
    """Raise a ``ValueError`` naming ``who`` and the setting for any value the augmentations cannot take."""
    if auto_augment is not None and auto_augment not in AUTO_AUGMENTS:
        raise ValueError(f"{who}: auto_augment must be None or one of {AUTO_AUGMENTS}, got {auto_augment!r}")
    if auto_augment in (None, "ta_wide"):
        given = [n for n, v in (("aa_magnitude", aa_magnitude), ("aa_num_ops", aa_num_ops)) if v is not None]
        if given:
            raise ValueError(f"{who}: {' and '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to "
                             f"auto_augment 'ra' (and aa_magnitude to 'augmix'), but auto_augment is {auto_augment!r}"
                             + (" (TrivialAugment draws its magnitude itself)" if auto_augment else ""))
    if auto_augment == "augmix" and aa_num_ops is not None:
        raise ValueError(f"{who}: aa_num_ops is RandAugment's number of operations; AugMix draws 1-3 per chain, "
                         f"got aa_num_ops={aa_num_ops!r} with auto_augment='augmix'")
    if aa_magnitude is not None:
        low, high = (0, RA_BINS - 1) if auto_augment == "ra" else AUGMIX_SEVERITIES
        if isinstance(aa_magnitude, bool) or not isinstance(aa_magnitude, int) or not low <= aa_magnitude <= high:
            raise ValueError(f"{who}: aa_magnitude must be an integer in {low}..{high} for auto_augment="
                             f"{auto_augment!r}, got {aa_magnitude!r}")
    if aa_num_ops is not None and (isinstance(aa_num_ops, bool) or not isinstance(aa_num_ops, int) or aa_num_ops < 1):
        raise ValueError(f"{who}: aa_num_ops must be a positive integer, got {aa_num_ops!r}")
    _number(who, "color_jitter", color_jitter, 0.0)
    _number(who, "random_erase", random_erase, 0.0, 1.0)
    _number(who, "mixup_alpha", mixup_alpha, 0.0)
    _number(who, "cutmix_alpha", cutmix_alpha, 0.0)


@dataclass(frozen=True)
class SampleAugment:
    """The per-sample augmentations of a training split (module docstring); all off by default."""

    auto_augment: str | None = None
    aa_magnitude: int | None = None   # ra: 0..30 (default 9); augmix: its severity, 1..10 (default 3)
    aa_num_ops: int | None = None     # ra: operations per image (default 2)
    color_jitter: float = 0.0
    random_erase: float = 0.0

    def __post_init__(self):
        check_augment("SampleAugment", auto_augment=self.auto_augment, aa_magnitude=self.aa_magnitude,
                      aa_num_ops=self.aa_num_ops, color_jitter=self.color_jitter, random_erase=self.random_erase)

    def __bool__(self) -> bool:
        return self.auto_augment is not None or self.color_jitter > 0 or self.random_erase > 0

    def image_steps(self) -> list[nn.Module]:
        """The steps on images in [0, 1] (or PIL, uint8): the policy, then the colour jitter."""
        steps: list[nn.Module] = []
        if self.auto_augment == "ra":
            steps.append(v2.RandAugment(num_ops=2 if self.aa_num_ops is None else self.aa_num_ops,
                                        magnitude=9 if self.aa_magnitude is None else self.aa_magnitude,
                                        num_magnitude_bins=RA_BINS, interpolation=InterpolationMode.BILINEAR))
        elif self.auto_augment == "ta_wide":
            steps.append(v2.TrivialAugmentWide(interpolation=InterpolationMode.BILINEAR))
        elif self.auto_augment == "augmix":
            steps.append(v2.AugMix(severity=3 if self.aa_magnitude is None else self.aa_magnitude,
                                   interpolation=InterpolationMode.BILINEAR))
        if self.color_jitter:
            steps.append(v2.ColorJitter(brightness=self.color_jitter, contrast=self.color_jitter,
                                        saturation=self.color_jitter))
        return steps

    def tensor_steps(self) -> list[nn.Module]:
        """The steps on normalised tensors: random erasing."""
        return [v2.RandomErasing(p=self.random_erase, value=0.0)] if self.random_erase else []


class InUnitRange(nn.Module):
    """Apply ``steps`` to a normalised image tensor in its [0, 1] range: x·std + mean, clamped to [0, 1], the
    steps, then (y − mean) / std again (for datasets that hand out normalised tensors)."""

    mean: torch.Tensor  # buffers, (C, 1, 1)
    std: torch.Tensor

    def __init__(self, steps, mean, std):
        super().__init__()
        self.steps = list(steps)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32)[:, None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x * self.std + self.mean).clamp_(0, 1)   # (C, H, W) in [0, 1], as v2's float images
        for step in self.steps:
            y = step(y)
        return (y - self.mean) / self.std


class BatchMix:
    """MixUp and/or CutMix of a batch ``(images (B, C, H, W), labels (B,))`` → ``(images, labels (B, K))``,
    its random numbers drawn from a CPU generator seeded by ``seed`` (the global one is left as it was)."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0):
        check_augment("BatchMix", mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"BatchMix: num_classes must be an integer >= 2, got {num_classes!r}")
        mixes = ([v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)] if mixup_alpha > 0 else []) + \
                ([v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)] if cutmix_alpha > 0 else [])
        if not mixes:
            raise ValueError("BatchMix: mixup_alpha or cutmix_alpha must be > 0")
        self.num_classes = num_classes
        self.mix = mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)  # one of the two per batch, p = ½ each

    def __call__(self, batch, *, seed: int):
        images, labels = batch
        with torch.random.fork_rng(devices=[]):  # v2 draws from the global CPU generator: fork it, seed it
            torch.default_generator.manual_seed(seed)
            images, labels = self.mix(images, labels)
        return images, labels

    def __repr__(self) -> str:
        return f"BatchMix({self.mix!r})"


def mixup_cutmix(num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> BatchMix | None:
    """The batch transform of these settings, or ``None`` when both alphas are 0."""
    if not (mixup_alpha or cutmix_alpha):
        check_augment("mixup_cutmix", mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha)
        return None
    return BatchMix(num_classes, mixup_alpha, cutmix_alpha)
