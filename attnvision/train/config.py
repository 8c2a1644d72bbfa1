"""The configuration of a training run: :class:`TrainConfig` (the core recipe)."""
from __future__ import annotations

from dataclasses import dataclass, field

# Settings that change how a run is executed, not what it trains: free to differ when resuming.
RUNTIME_KEYS = ("workers", "threads", "eval_batch_size", "device", "out", "resume", "overwrite", "progress")


@dataclass
class TrainConfig:
    """One training run. ``lr=None`` and ``weight_decay=None`` pick the optimiser's default
    (SGD: 0.1 and 5e-4; AdamW: 1e-3 and 0.05)."""

    model: str = "resnet20"
    data: str = "digits"
    task: str = "classification"       # or "detection", "segmentation" (attnvision.tasks)
    backbone: str | None = None        # detection/segmentation: the network under the head named by model
    num_classes: int | None = None     # detection/segmentation: checked against the data; segfolder needs it
    min_size: int | None = None        # detection: torchvision's resizing (default: the built-in canvases' 64,
    max_size: int | None = None        # else 800 and 1333)
    trainable_stages: int | None = None  # detection/segmentation: backbone stages trained (default all)
    epochs: int = 10
    batch_size: int = 128
    lr: float | None = None
    opt: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float | None = None
    sched: str = "cosine"
    warmup_epochs: float = 0.0
    step_epochs: float = 30.0          # step schedule: multiply the rate by step_gamma every step_epochs
    step_gamma: float = 0.1
    step_milestones: tuple[float, ...] = ()  # step schedule at these epochs instead (He et al.: 50% and 75%)
    label_smoothing: float = 0.0
    # classification augmentation (attnvision.data.augment): per sample, then per batch
    auto_augment: str | None = None    # "ra" (RandAugment), "ta_wide" (TrivialAugment Wide) or "augmix"
    aa_magnitude: int | None = None    # ra: 0..30 (default 9); augmix: its severity, 1..10 (default 3)
    aa_num_ops: int | None = None      # ra: operations per image (default 2)
    color_jitter: float = 0.0          # brightness, contrast and saturation factors in [1 - S, 1 + S]
    random_erase: float = 0.0          # probability of erasing one rectangle
    mixup_alpha: float = 0.0           # MixUp's Beta(alpha, alpha); 0: off
    cutmix_alpha: float = 0.0          # CutMix's; with mixup_alpha too, one of the two per batch
    clip_grad: float | None = None
    accum_steps: int = 1               # micro-batches of batch_size per optimiser step
    layer_decay: float | None = None   # layer-wise lr decay D: group i of L at lr·D^(L−i) (optim.layer_ids)
    amp: str | None = None             # None, "bf16" or "fp16"
    ema: float | None = None           # EMA decay, e.g. 0.999
    compile: bool = False
    deterministic: bool = False
    sync_bn: bool = False
    seed: int = 0
    model_kwargs: dict = field(default_factory=dict)
    attach: str | None = None          # retrofit attention into the model: attnvision.attach(model, attach)
    attach_init: str = "identity"
    input_size: tuple[int, int, int] | None = None
    workers: int = 0
    threads: int | None = None         # torch.set_num_threads (small CPU models often run best on 1)
    eval_batch_size: int = 256
    device: str | None = None
    out: str | None = None
    resume: bool = False               # continue the run in out from its last.state.pt
    overwrite: bool = False            # replace the run in out (by default train refuses to)
    progress: bool = True

    def recipe(self) -> dict:
        """What the run trains: every setting but the :data:`RUNTIME_KEYS`."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in RUNTIME_KEYS}
