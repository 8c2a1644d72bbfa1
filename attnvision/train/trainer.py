"""The training loop: one recipe for every registered model, on one process or many.

``train(TrainConfig(model="resnet20_cbam", data="cluttered-digits", epochs=10, out="runs/x"))``
trains, evaluates after every epoch and writes into ``out``:

- ``metrics.csv`` and ``metrics.jsonl``: one row per epoch (``epoch, train_loss, train_acc1,
  val_loss, val_acc1, val_acc5, lr, seconds, train_images_per_s``), and TensorBoard events
  when ``tensorboard`` is installed;
- ``last.safetensors``, ``best.safetensors``, ``last.state.pt`` (see :mod:`.checkpoints`);
- ``summary.json``: final and best ``val_acc1``, parameters, MACs, train and inference throughput;
- ``run.json``: the record of the run, written before the first step (see :mod:`.rundir`).

A directory that holds another run is refused unless ``resume`` (continue it: the recipe must
be the same, but for more ``epochs``) or ``overwrite`` (replace it) is set.

Recipe: SGD (momentum, optional Nesterov) or AdamW; per-iteration cosine or step schedule
after a linear warm-up; label smoothing; weight decay on conv/linear weights only; gradient
clipping by global norm; AMP (bf16, or fp16 with a gradient scaler) on GPUs; optional EMA
of the weights (then evaluated and saved); optional ``torch.compile``.

Reproducibility: the data order of epoch e is a permutation seeded by (seed, e) and each
sample's augmentation is seeded by (seed, e, index), so a run resumed from any saved point
(``resume=True``) follows the uninterrupted run exactly; with ``deterministic=True`` (which
also asks PyTorch for deterministic kernels) its final weights are the same bit for bit on CPU.

Distributed (torchrun): ``batch_size`` is the global batch, split evenly over the ranks; rank r
takes elements r, r + world, ... of each global batch, so N processes see the same samples per
step as one process. Gradients are averaged by DistributedDataParallel, metrics are summed over
ranks, and only rank 0 writes files or draws the progress bar.

A non-finite loss stops the run with :class:`NonFiniteLossError` naming the step, before the
bad step touches the weights; the last good checkpoint stays. Ctrl-C (SIGINT) finishes the
current step, saves ``last`` at that batch and returns (a second Ctrl-C aborts at once).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..data.transforms import _mix
from ..io import atomic_write_text
from . import checkpoints as ckpt
from . import rundir
from .distributed import Dist, all_sum, barrier, broadcast_buffers, convert_sync_batchnorm, init
from .evaluate import evaluate
from .optim import OPTIMIZERS, create_ema, create_optimizer, create_scheduler

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc1", "val_loss", "val_acc1", "val_acc5", "lr", "seconds",
                  "train_images_per_s")
# Settings that change how a run is executed, not what it trains: free to differ when resuming.
RUNTIME_KEYS = ("workers", "threads", "eval_batch_size", "device", "out", "resume", "overwrite", "progress")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step."""


@dataclass
class TrainConfig:
    """One training run. ``lr=None`` and ``weight_decay=None`` pick the optimiser's default
    (SGD: 0.1 and 5e-4; AdamW: 1e-3 and 0.05)."""

    model: str = "resnet20"
    data: str = "digits"
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
    clip_grad: float | None = None
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


def _check(cfg: TrainConfig, d: Dist) -> None:
    if not isinstance(cfg.epochs, int) or cfg.epochs < 1:
        raise ValueError(f"train: epochs must be a positive integer, got {cfg.epochs!r}")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise ValueError(f"train: batch_size must be a positive integer, got {cfg.batch_size!r}")
    if cfg.batch_size % d.world_size:
        raise ValueError(f"train: the global batch_size ({cfg.batch_size}) must divide evenly over "
                         f"{d.world_size} processes")
    if cfg.opt not in OPTIMIZERS:
        raise ValueError(f"train: opt must be one of {OPTIMIZERS}, got {cfg.opt!r}")
    if cfg.amp is not None and cfg.amp not in AMP_DTYPES:
        raise ValueError(f"train: amp must be None, 'bf16' or 'fp16', got {cfg.amp!r}")
    if cfg.amp == "fp16" and d.device.type != "cuda":
        raise ValueError("train: amp='fp16' needs a GPU; use amp='bf16' or no amp on CPU")
    if cfg.resume and not cfg.out:
        raise ValueError("train: resume needs the run's out directory")
    if not isinstance(cfg.model_kwargs, dict):
        raise TypeError(f"train: model_kwargs must be a dict, got {type(cfg.model_kwargs).__name__}")
    rundir.check_out(cfg.out, cfg.resume, cfg.overwrite)


def _set_deterministic(on: bool) -> None:
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on


def build_datasets(cfg: TrainConfig, pretrained_cfg: dict | None = None):
    from ..data import create_dataset

    pc = pretrained_cfg or {}
    kw = dict(input_size=cfg.input_size or pc.get("input_size"), mean=pc.get("mean"), std=pc.get("std"),
              crop_pct=pc.get("crop_pct", 0.875), seed=cfg.seed)
    return create_dataset(cfg.data, "train", **kw), create_dataset(cfg.data, "val", **kw)


def build_model(cfg: TrainConfig, num_classes: int, in_chans: int) -> nn.Module:
    torch.manual_seed(cfg.seed)
    return rundir.create_run_model(cfg.model, cfg.model_kwargs, num_classes=num_classes, in_chans=in_chans,
                                   attach=cfg.attach, attach_init=cfg.attach_init)


def model_pretrained_cfg(cfg: TrainConfig) -> dict:
    from ..registry import create_model

    with torch.device("meta"):
        return dict(getattr(create_model(cfg.model, **cfg.model_kwargs), "pretrained_cfg", {}) or {})


class _StopFlag:
    """SIGINT sets the flag (the loop stops after the current step) and says so at once on stderr;
    a second SIGINT raises ``KeyboardInterrupt(abort())`` (files are written atomically, so the
    last complete checkpoint stays)."""

    def __init__(self, notice: str | None, abort: Callable[[], str]):
        self.requested = False
        self._previous = None
        self.notice, self.abort = notice, abort

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave SIGINT alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt(self.abort())
        self.requested = True
        if self.notice:
            print(f"\n{self.notice}", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class MetricsLog:
    """``metrics.csv`` and ``metrics.jsonl`` (rewritten atomically each epoch) and TensorBoard if installed."""

    def __init__(self, out: str, rows: list[dict]):
        self.out, self.rows = out, list(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(os.path.join(out, "tensorboard"))
        except ImportError:
            self.tb = None

    def add(self, row: dict) -> None:
        self.rows.append(row)
        lines = [",".join(METRIC_COLUMNS)] + [",".join(_fmt(r[c]) for c in METRIC_COLUMNS) for r in self.rows]
        atomic_write_text(os.path.join(self.out, "metrics.csv"), "\n".join(lines) + "\n")
        atomic_write_text(os.path.join(self.out, "metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in self.rows))
        if self.tb is not None:
            for k, v in row.items():
                if k != "epoch":
                    self.tb.add_scalar(k, v, row["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def check_resumable(stored: dict, recipe: dict, epochs_done: int) -> None:
    """Raise unless ``recipe`` continues the run whose recipe was ``stored``: the same in every
    setting it stored, except ``epochs``, which may grow (the schedule then runs to the new end)."""
    def plain(v):  # as stored in JSON: tuples and lists alike
        return json.loads(json.dumps(v))

    changed = {k: (stored[k], recipe[k]) for k in stored
               if k != "epochs" and k in recipe and plain(stored[k]) != plain(recipe[k])}
    if changed:
        raise ValueError("train: cannot resume with a different recipe: "
                         + ", ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in changed.items())
                         + " (only epochs may change, to at least the epochs done)")
    if recipe["epochs"] < epochs_done:
        raise ValueError(f"train: cannot resume with epochs={recipe['epochs']}: the run has done {epochs_done} "
                         f"epochs already")


def _config(cfg: TrainConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("resume", "overwrite", "progress")}


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def train(cfg: TrainConfig, *, model: nn.Module | None = None, train_set=None, val_set=None,
          on_step: Callable[[int], None] | None = None) -> dict:
    """Train as ``cfg`` says and return the summary (also written to ``out/summary.json``).

    ``model``, ``train_set`` and ``val_set`` replace the ones ``cfg`` names (for custom
    networks and data); ``on_step(global_step)`` is called after every optimiser step.
    """
    d = init(cfg.device)
    _check(cfg, d)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        _set_deterministic(cfg.deterministic)
        return _train(cfg, d, model, train_set, val_set, on_step)
    finally:  # leave the process as it was (compare trains many runs in one process)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(cfg: TrainConfig, d: Dist, model, train_set, val_set, on_step) -> dict:
    custom_model = model is not None
    if model is not None:
        pretrained_cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    else:
        pretrained_cfg = model_pretrained_cfg(cfg)
    if train_set is None or val_set is None:
        built_train, built_val = build_datasets(cfg, pretrained_cfg)
        train_set, val_set = train_set or built_train, val_set or built_val
    if model is None:
        model = build_model(cfg, train_set.num_classes, train_set.in_chans)
    device = d.device
    sample_shape = tuple(val_set[0][0].shape)
    if cfg.input_size is not None and tuple(cfg.input_size) != sample_shape:
        raise ValueError(f"train: input_size {'x'.join(map(str, cfg.input_size))} does not fit the data {cfg.data!r}, "
                         f"whose images are {'x'.join(map(str, sample_shape))} (only image folders are resized, "
                         f"to square sizes); leave input_size out or match it")

    from ..profiling import profile
    prof = profile(model, (1, *sample_shape))
    model.to(device)
    if cfg.sync_bn:
        model = convert_sync_batchnorm(model, device)
    ema = create_ema(model, cfg.ema) if cfg.ema else None
    opt_defaults = dict(sgd=(0.1, 5e-4), adamw=(1e-3, 0.05))[cfg.opt]
    lr = cfg.lr if cfg.lr is not None else opt_defaults[0]
    wd = cfg.weight_decay if cfg.weight_decay is not None else opt_defaults[1]
    optimizer = create_optimizer(model, cfg.opt, lr, weight_decay=wd, momentum=cfg.momentum, nesterov=cfg.nesterov)
    steps_per_epoch = len(train_set) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"train: the training set ({len(train_set)} samples) is smaller than one batch "
                         f"({cfg.batch_size})")
    scheduler = create_scheduler(optimizer, cfg.sched, total_steps=cfg.epochs * steps_per_epoch,
                                 warmup_steps=int(cfg.warmup_epochs * steps_per_epoch),
                                 step_every=int(cfg.step_epochs * steps_per_epoch), gamma=cfg.step_gamma,
                                 milestones=tuple(int(m * steps_per_epoch) for m in cfg.step_milestones))
    amp_dtype = AMP_DTYPES.get(cfg.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    net = model
    if d.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    eval_model = ema.module if ema is not None else model

    out = cfg.out
    start_epoch, start_batch, global_step, best, rows = 0, 0, 0, None, []
    running = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count of the epoch so far
    if cfg.resume:
        state = ckpt.load_state(os.path.join(out, ckpt.LAST_STATE))
        check_resumable(state["recipe"], cfg.recipe(), state["epoch"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        ckpt.set_rng_state(state["rng"])
        start_epoch, start_batch, global_step = state["epoch"], state["batch"], state["global_step"]
        best, rows, running = state["best"], state["rows"], state["running"]
    if out and d.is_main:  # the first write into out
        if cfg.overwrite:
            rundir.clear_run(out)
        run_cfg = rundir.data_pretrained_cfg(cfg.data, train_set, sample_shape, pretrained_cfg)
        record = rundir.write_record(out, _config(cfg), train_set, run_cfg, custom_model)
    # the weights carry what rebuilds their model, unless the record cannot name one
    model_meta = rundir.model_metadata(record) if out and d.is_main and not custom_model else {}
    log = MetricsLog(out, rows) if out and d.is_main else None

    def save(epoch: int, batch: int, row: dict | None) -> None:
        nonlocal best
        if row is not None and (best is None or row["val_acc1"] > best["val_acc1"]):
            best = dict(epoch=row["epoch"], val_acc1=row["val_acc1"])
            if out and d.is_main:
                ckpt.save_weights(os.path.join(out, ckpt.BEST_WEIGHTS), eval_model.state_dict(),
                                  dict(model_meta, epoch=row["epoch"], val_acc1=row["val_acc1"]))
        if not (out and d.is_main):
            return
        ckpt.save_weights(os.path.join(out, ckpt.LAST_WEIGHTS), eval_model.state_dict(),
                          dict(model_meta, epoch=epoch, batch=batch))
        ckpt.save_state(os.path.join(out, ckpt.LAST_STATE), dict(
            recipe=cfg.recipe(), model=model.state_dict(), ema=ema.state_dict() if ema is not None else None,
            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), scaler=scaler.state_dict(),
            rng=ckpt.rng_state(), epoch=epoch, batch=batch, global_step=global_step, best=best,
            rows=log.rows if log else [], running=running))

    started = time.perf_counter()
    interrupted, result, train_ips = False, None, 0.0
    resume_hint = f"continue with `attnvision train --resume {out}`" if out else "no out directory: nothing is saved"
    notice = (f"train: Ctrl-C: stopping at the end of the current step{' and saving ' + out if out else ''}; "
              f"press Ctrl-C again to quit at once" if d.is_main else None)

    def abort() -> str:
        if out and os.path.isfile(os.path.join(out, ckpt.LAST_STATE)):
            return f"train: stopped at once by a second Ctrl-C; {out} keeps its last complete checkpoint; {resume_hint}"
        return "train: stopped at once by a second Ctrl-C, before anything was saved; start the run again"
    with _StopFlag(notice, abort) as stop:
        for epoch in range(start_epoch, cfg.epochs):
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(_mix(cfg.seed, epoch)))
            batches = order[:steps_per_epoch * cfg.batch_size].view(steps_per_epoch, cfg.batch_size)
            batches = batches[start_batch:, d.rank::d.world_size]  # (steps, batch per rank)
            loader = DataLoader(train_set, batch_sampler=batches.tolist(), num_workers=cfg.workers,
                                pin_memory=device.type == "cuda", generator=torch.Generator())
            bar = None
            if cfg.progress and d.is_main:
                from tqdm import tqdm
                bar = tqdm(total=steps_per_epoch, initial=start_batch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           dynamic_ncols=True, leave=False)
            model.train()
            epoch_start, images = time.perf_counter(), 0
            for batch, (x, y) in enumerate(loader, start=start_batch):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = net(x)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                local = torch.tensor([loss.item() * len(y), (logits.argmax(1) == y).sum().item(), len(y),
                                      not torch.isfinite(loss).item(), stop.requested], dtype=torch.float64)
                step_stats = all_sum(local.to(device), d).cpu()
                if step_stats[3] > 0:
                    if bar is not None:
                        bar.close()
                    value = loss.item() if not torch.isfinite(loss) else "non-finite on another rank"
                    kept = (f"the last good checkpoint is {os.path.join(out, ckpt.LAST_STATE)} (epoch {epoch}, "
                            f"batch {start_batch})" if out and (epoch or start_batch) else "no checkpoint was written")
                    raise NonFiniteLossError(
                        f"train: the loss became {value} at step {global_step + 1} (epoch {epoch + 1}, batch "
                        f"{batch + 1} of {steps_per_epoch}); stopped before updating the weights; {kept}. "
                        f"Lower the learning rate or clip gradients (--clip-grad).")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.clip_grad:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                global_step += 1
                running += step_stats[:3]
                images += int(step_stats[2])
                if bar is not None:
                    ips = images / max(time.perf_counter() - epoch_start, 1e-9)
                    bar.set_postfix(loss=f"{running[0] / running[2]:.4f}", acc=f"{100 * running[1] / running[2]:.2f}",
                                    img_s=f"{ips:.0f}", refresh=False)
                    bar.update()
                if on_step is not None:
                    on_step(global_step)
                if step_stats[4] > 0 or stop.requested:
                    interrupted = True
                    save(epoch, batch + 1, None)
                    break
            if bar is not None:
                bar.close()
            if interrupted:
                break
            seconds = time.perf_counter() - epoch_start
            train_ips = images / max(seconds, 1e-9)
            broadcast_buffers(model, d)
            result = evaluate(eval_model, val_set, batch_size=cfg.eval_batch_size, device=device, workers=cfg.workers,
                              amp_dtype=amp_dtype, d=d)
            row = dict(epoch=epoch + 1, train_loss=(running[0] / running[2]).item(),
                       train_acc1=(100 * running[1] / running[2]).item(), val_loss=result.loss,
                       val_acc1=result.acc1, val_acc5=result.acc5, lr=optimizer.param_groups[0]["lr"],
                       seconds=time.perf_counter() - epoch_start, train_images_per_s=train_ips)
            if log is not None:
                log.add(row)
            if d.is_main and cfg.progress:
                print(f"epoch {epoch + 1}/{cfg.epochs}  train loss {row['train_loss']:.4f}  "
                      f"val loss {result.loss:.4f}  val acc1 {result.acc1:.2f}  acc5 {result.acc5:.2f}  "
                      f"({row['seconds']:.1f} s, {train_ips:.0f} img/s)", flush=True)
            start_batch, running = 0, torch.zeros(3, dtype=torch.float64)
            save(epoch + 1, 0, row)
    if log is not None:
        log.close()
    barrier(d)
    all_rows = log.rows if log is not None else rows
    if result is None and not interrupted and all_rows:  # resumed after the last epoch: evaluate once
        result = evaluate(eval_model, val_set, batch_size=cfg.eval_batch_size, device=device, d=d)
    summary = dict(
        model=cfg.model, data=cfg.data, seed=cfg.seed, model_kwargs=cfg.model_kwargs, attach=cfg.attach,
        epochs=cfg.epochs, epochs_done=all_rows[-1]["epoch"] if all_rows else 0, interrupted=interrupted,
        val_acc1=result.acc1 if result else None, val_acc5=result.acc5 if result else None,
        val_loss=result.loss if result else None,
        best_val_acc1=best["val_acc1"] if best else None, best_epoch=best["epoch"] if best else None,
        params=prof.params, macs=prof.macs, input_size=list(sample_shape),
        train_images_per_s=train_ips or (all_rows[-1]["train_images_per_s"] if all_rows else None),
        infer_images_per_s=result.images_per_s if result else None,
        seconds=time.perf_counter() - started, world_size=d.world_size,
        config=_config(cfg),
    )
    if out and d.is_main and not interrupted:
        atomic_write_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=1) + "\n")
    if interrupted and d.is_main:
        print(f"train: interrupted: saved {os.path.join(out, ckpt.LAST_STATE)}; {resume_hint}" if out else
              f"train: interrupted: {resume_hint}", file=sys.stderr, flush=True)
    return summary
