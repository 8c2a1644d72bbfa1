"""The training loop: one recipe for every registered model and every task, on one process or many.

``train(TrainConfig(model="resnet20_cbam", data="cluttered-digits", epochs=10, out="runs/x"))``
trains, evaluates after every epoch and writes into ``out``:

- ``metrics.csv`` and ``metrics.jsonl``: one row per epoch (``epoch, train_loss, train_acc1,
  val_loss, val_acc1, val_acc5, lr, seconds, train_images_per_s`` for classification; the task's
  own ``train_*``/``val_*`` columns otherwise), with ``logger="csv"`` (the default); the rows, the
  configuration and the summary go to TensorBoard and W&B when ``logger`` names them (:mod:`.loggers`);
- ``last.safetensors``, ``best.safetensors`` (the best ``val_acc1``, ``val_map`` or ``val_miou``),
  ``last.state.pt`` (see :mod:`.checkpoints`);
- ``summary.json``: final and best metrics, parameters, MACs, train and inference throughput;
- ``run.json``: the record of the run, written before the first step (see :mod:`.rundir`), with its
  ``status``: ``running``, then ``finished``, ``interrupted`` (Ctrl-C) or ``failed`` (and the ``error``);
- ``bad_files.txt``: with ``skip_bad_files``, the data files left out.

Before anything is written, every file of the datasets read from files (image folders, COCO, VOC,
segmentation folders) is checked (:mod:`attnvision.data.check`): image headers, sizes, mask classes. A bad
file is one error naming it, rather than a stop in the middle of an epoch; ``skip_bad_files`` leaves them out.

``TrainConfig(task="detection", model="fasterrcnn", backbone="resnet18_cbam", data="cluttered-digits-det")``
trains a detector, ``task="segmentation"`` a segmenter: the loop (:class:`_Loop`: build, restore, train an
epoch, evaluate, save and log) is the same; what differs comes from the task object
(:mod:`.tasks`, :mod:`attnvision.tasks`).

A directory that holds another run is refused unless ``resume`` (continue it: the recipe must
be the same, but for more ``epochs``) or ``overwrite`` (replace it) is set.

Recipe: SGD (momentum, optional Nesterov) or AdamW; per-iteration cosine or step schedule
after a linear warm-up; label smoothing; for classification, RandAugment/TrivialAugment/AugMix,
colour jitter, random erasing and MixUp/CutMix (:mod:`attnvision.data.augment`; a batch's mixing is
seeded by (seed, epoch, batch, rank)); weight decay on conv/linear weights only (not on what the
model's ``no_weight_decay()`` names); optional layer-wise learning-rate decay over the model's
``group_matcher()`` (:mod:`.optim`); gradient accumulation; gradient clipping by global norm; AMP
(bf16, or fp16 with a gradient scaler) on GPUs; optional EMA of the weights (then evaluated and
saved); optional ``torch.compile``.

Reproducibility: the data order of epoch e is a permutation seeded by (seed, e) and each
sample's augmentation is seeded by (seed, e, index), so a run resumed from any saved point
(``resume=True``) follows the uninterrupted run exactly; with ``deterministic=True`` (which
also asks PyTorch for deterministic kernels) its final weights are the same bit for bit on CPU.

Gradient accumulation (``accum_steps=N``): ``batch_size`` is then the micro-batch; the optimiser steps
once every N micro-batches on the mean of their losses, so N micro-batches of B samples make the
step of one batch of N·B (exactly, for models without batch statistics). The schedule counts
optimiser steps; the epoch's last group may hold fewer micro-batches and is averaged over those.
Interruption and the saved state fall on optimiser steps.

Distributed (torchrun): ``batch_size`` is the global batch, split evenly over the ranks; rank r
takes elements r, r + world, ... of each global batch, so N processes see the same samples per
step as one process. Gradients are averaged by DistributedDataParallel, metrics are summed over
ranks, and only rank 0 writes files or draws the progress bar. Under ``torchrun --max-restarts N`` a
process that dies makes torchrun restart the group, and the restarted run continues from the last
saved state of ``out`` by itself when ``out`` holds this same recipe (with ``save_every_steps``, at
most K steps are redone).

A non-finite loss stops the run with :class:`NonFiniteLossError` naming the step, before the
bad step touches the weights; the last good checkpoint stays. ``skip_nonfinite=N`` tolerates up to N
such steps first: each is skipped (no optimiser step; the batch's BatchNorm statistics undone), with a
warning line naming it, and counted in the summary's ``nonfinite_steps``. Ctrl-C (SIGINT) or SIGTERM (``kill``'s
default, what a scheduler sends a job it ends; unless the program handles SIGTERM itself) finishes the current
step, saves ``last`` at that batch and returns, with the summary's ``stop_signal`` naming it (a second one aborts
at once).
``save_every_steps=K`` also saves the state every K optimiser steps, so that a crash loses at most K
steps of an epoch; resuming continues from that batch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data.augment import AUGMENT_FIELDS, check_augment
from ..data.check import BadFile, checks_files, find_bad_files, one_line
from ..data.transforms import _mix
from ..io import atomic_write_text, remove_temporaries
from ..profiling.profile import profile  # the function (mypy takes the package's name for the module)
from . import checkpoints as ckpt
from . import rundir
from .config import TrainConfig, plain
from .distributed import (Dist, all_gather_objects, all_sum, barrier, broadcast_buffers, convert_sync_batchnorm,
                          elastic_restart, elastic_run_id, init)
from .loggers import RunLoggers, check_loggers
from .optim import OPTIMIZERS, base_lr, create_ema, create_optimizer, create_scheduler
from .process import scoped_process_state
from .tasks import get_task

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step."""


def _check(cfg: TrainConfig, d: Dist) -> None:
    if not isinstance(cfg.epochs, int) or cfg.epochs < 1:
        raise ValueError(f"train: epochs must be a positive integer, got {cfg.epochs!r}")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise ValueError(f"train: batch_size must be a positive integer, got {cfg.batch_size!r}")
    if cfg.batch_size % d.world_size:
        raise ValueError(f"train: the global batch_size ({cfg.batch_size}) must divide evenly over "
                         f"{d.world_size} processes")
    if isinstance(cfg.accum_steps, bool) or not isinstance(cfg.accum_steps, int) or cfg.accum_steps < 1:
        raise ValueError(f"train: accum_steps must be a positive integer, got {cfg.accum_steps!r}")
    if isinstance(cfg.skip_nonfinite, bool) or not isinstance(cfg.skip_nonfinite, int) or cfg.skip_nonfinite < 0:
        raise ValueError(f"train: skip_nonfinite must be an integer >= 0 (0: stop at the first non-finite loss), got "
                         f"{cfg.skip_nonfinite!r}")
    if cfg.save_every_steps is not None and (isinstance(cfg.save_every_steps, bool)
                                             or not isinstance(cfg.save_every_steps, int) or cfg.save_every_steps < 1):
        raise ValueError(f"train: save_every_steps must be a positive integer (or None: at the end of each epoch "
                         f"only), got {cfg.save_every_steps!r}")
    if cfg.layer_decay is not None and not (isinstance(cfg.layer_decay, (int, float)) and 0 < cfg.layer_decay <= 1):
        raise ValueError(f"train: layer_decay must be in (0, 1] (or None: off), got {cfg.layer_decay!r}")
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
    check_augment("train", **{k: getattr(cfg, k) for k in AUGMENT_FIELDS})
    check_loggers(cfg.logger, "train")
    rundir.check_out(cfg.out, cfg.resume, cfg.overwrite)


def build_datasets(cfg: TrainConfig, pretrained_cfg: dict | None = None):
    """The train and val datasets of ``cfg`` (its task's)."""
    return get_task(cfg.task).datasets(cfg, pretrained_cfg)


def build_model(cfg: TrainConfig, train_set) -> nn.Module:
    """The model of ``cfg`` for ``train_set``'s classes (and channels), seeded by ``cfg.seed``."""
    return get_task(cfg.task).build_model(cfg, train_set)


def model_pretrained_cfg(cfg: TrainConfig) -> dict:
    """The preprocessing of ``cfg``'s model (of its backbone for dense tasks)."""
    return get_task(cfg.task).model_pretrained_cfg(cfg)


STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}  # each: stop after the current step


class _StopFlag:
    """SIGINT or SIGTERM sets the flag (the loop stops after the current step) and says so at once on stderr
    (``notice(what)``, ``what`` being ``Ctrl-C`` or ``SIGTERM``); a second one raises
    ``KeyboardInterrupt(abort(what))`` (files are written atomically, so the last complete checkpoint stays).
    SIGTERM is taken only where nothing else handles it: a program with its own handler (submitit's jobs, which
    requeue themselves on their own signal) keeps it."""

    def __init__(self, notice: Callable[[str], str] | None, abort: Callable[[str], str]):
        self.requested: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self.notice, self.abort = notice, abort

    def __enter__(self):
        try:
            for signum in STOP_SIGNALS:
                if signum == signal.SIGINT or signal.getsignal(signum) == signal.SIG_DFL:
                    self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread: leave the handlers alone
            pass
        return self

    def _handle(self, signum, frame):
        what = STOP_SIGNALS[signal.Signals(signum)]
        if self.requested is not None:
            raise KeyboardInterrupt(self.abort(what))
        self.requested = signal.Signals(signum)
        if self.notice:
            print(f"\n{self.notice(what)}", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def check_resumable(stored: dict, recipe: dict, epochs_done: int) -> None:
    """Raise unless ``recipe`` continues the run whose recipe was ``stored``: the same in every
    setting it stored, except ``epochs``, which may grow (the schedule then runs to the new end)."""
    changed = {k: (stored[k], recipe[k]) for k in stored
               if k != "epochs" and k in recipe and plain(stored[k]) != plain(recipe[k])}
    if changed:
        raise ValueError("train: cannot resume with a different recipe: "
                         + ", ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in changed.items())
                         + " (only epochs may change, to at least the epochs done)")
    if recipe["epochs"] < epochs_done:
        raise ValueError(f"train: cannot resume with epochs={recipe['epochs']}: the run has done {epochs_done} "
                         f"epochs already")


def _elastic_record() -> dict:
    """What tells a restarted torchrun job that ``out`` holds its own run: the job's id (none outside torchrun)."""
    run_id = elastic_run_id()
    return {} if run_id is None else {"elastic_run_id": run_id}


def _config(cfg: TrainConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("resume", "overwrite", "progress")}


def train(cfg: TrainConfig, *, model: nn.Module | None = None, train_set=None, val_set=None,
          on_step: Callable[[int], None] | None = None) -> dict:
    """Train as ``cfg`` says and return the summary (also written to ``out/summary.json``).

    ``model``, ``train_set`` and ``val_set`` replace the ones ``cfg`` names (for custom
    networks and data); ``on_step(global_step)`` is called after every optimiser step.
    """
    d = init(cfg.device)
    cfg = _continuation(cfg, d)
    _check(cfg, d)
    # leave the process as it was (compare trains many runs in one process)
    with scoped_process_state(threads=cfg.threads, deterministic=cfg.deterministic):
        return _train(cfg, d, model, train_set, val_set, on_step)


def _continuation(cfg: TrainConfig, d: Dist) -> TrainConfig:
    """``cfg`` as it continues the run in ``out``.

    - Restarted by torchrun (``--max-restarts``) after a process failed, with ``out`` holding the record this
      torchrun job wrote, of this very recipe: continue it (``resume``), with no ``--resume`` needed; otherwise
      as on a first start.
    - ``resume`` of a run that was killed before its first checkpoint (its record, no training state):
      start that run again from the beginning, replacing what it left.

    Every rank decides before rank 0 writes anything into ``out``.
    """
    out = cfg.out
    restart = elastic_restart()
    if restart and out and not cfg.resume and os.path.isfile(os.path.join(out, rundir.RUN_RECORD)):
        record = rundir.read_record(out, "train")
        stored = record["config"]
        if record.get("elastic_run_id") == elastic_run_id() and all(
                k in stored and plain(stored[k]) == plain(v) for k, v in cfg.recipe().items()):
            if d.is_main:
                print(f"train: restarted by torchrun (restart {restart}): continuing the run in {out} from its last "
                      f"saved state", file=sys.stderr, flush=True)
            cfg = dataclasses.replace(cfg, resume=True, overwrite=False)
    if (cfg.resume and out and not os.path.isfile(os.path.join(out, ckpt.LAST_STATE))
            and os.path.isfile(os.path.join(out, rundir.RUN_RECORD))):
        check_resumable(rundir.read_record(out, "train --resume")["config"], cfg.recipe(), 0)
        if d.is_main:
            print(f"train: {out} holds no training state: its run stopped before its first checkpoint; starting "
                  f"it again from the beginning", file=sys.stderr, flush=True)
        cfg = dataclasses.replace(cfg, resume=False, overwrite=True)
    barrier(d)
    return cfg


class _Loop:
    """One run, step by step: :meth:`build` the data, model and optimiser, :meth:`restore` a saved state,
    :meth:`train_epoch`, :meth:`evaluate`, :meth:`save` (and log); the task supplies what differs."""

    def __init__(self, cfg: TrainConfig, d: Dist, task, on_step):
        self.cfg, self.d, self.task, self.on_step = cfg, d, task, on_step
        self.out = cfg.out if cfg.out else None
        self.start_epoch, self.start_batch, self.global_step = 0, 0, 0
        self.saved_at: tuple[int, int] | None = None  # (epoch, batch) of the last state written
        self.recorded = False  # run.json written (by this process)
        self.nonfinite_steps = 0  # optimiser steps skipped for a non-finite loss (skip_nonfinite)
        self.bad_files: list[tuple[str, BadFile]] = []  # (split, file) left out
        self.best: dict | None = None
        self.rows: list[dict] = []
        self.running = self._zeros()  # the task's sums over the epoch so far (count last)

    def _zeros(self) -> torch.Tensor:
        return torch.zeros(len(self.task.train_columns) + 1, dtype=torch.float64)

    # -- build ---------------------------------------------------------------------------------
    def build(self, model, train_set, val_set) -> None:
        cfg, d, task = self.cfg, self.d, self.task
        self.custom_model = model is not None
        if model is not None:
            self.pretrained_cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
        else:
            self.pretrained_cfg = task.model_pretrained_cfg(cfg)
        if train_set is not None and task.sample_augment(cfg):
            raise ValueError("train: auto_augment, color_jitter and random_erase are added to the datasets built from "
                             "cfg.data; the train_set passed in keeps its own transforms: add them to it, or leave "
                             "train_set out")
        if train_set is None or val_set is None:
            built_train, built_val = task.datasets(cfg, self.pretrained_cfg)
            train_set, val_set = train_set or built_train, val_set or built_val
        self.bad_files = self._check_files(train_set, val_set)
        self.batch_transform = task.batch_transform(cfg, train_set)  # MixUp/CutMix, seeded per batch
        if model is None:
            model = task.build_model(cfg, train_set)
        self.train_set, self.val_set = train_set, val_set
        device = self.device = d.device
        self.sample_shape = tuple(val_set[0][0].shape)
        if cfg.input_size is not None and tuple(cfg.input_size) != self.sample_shape:
            raise ValueError(f"train: input_size {'x'.join(map(str, cfg.input_size))} does not fit the data "
                             f"{cfg.data!r}, whose images are {'x'.join(map(str, self.sample_shape))} (only image "
                             f"folders are resized, to square sizes); leave input_size out or match it")

        self.prof = profile(model, (1, *self.sample_shape))
        model.to(device)
        if cfg.sync_bn:
            model = convert_sync_batchnorm(model, device)
        self.model = model
        self.ema = create_ema(model, cfg.ema) if cfg.ema else None
        opt_defaults = dict(sgd=(0.1, 5e-4), adamw=(1e-3, 0.05))[cfg.opt]
        lr = cfg.lr if cfg.lr is not None else opt_defaults[0]
        wd = cfg.weight_decay if cfg.weight_decay is not None else opt_defaults[1]
        self.optimizer = create_optimizer(model, cfg.opt, lr, weight_decay=wd, momentum=cfg.momentum,
                                          nesterov=cfg.nesterov, layer_decay=cfg.layer_decay)
        self.batches_per_epoch = len(train_set) // cfg.batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"train: the training set ({len(train_set)} samples) is smaller than one batch "
                             f"({cfg.batch_size})")
        # optimiser steps; the schedule counts these
        steps = self.steps_per_epoch = -(-self.batches_per_epoch // cfg.accum_steps)
        self.scheduler = create_scheduler(self.optimizer, cfg.sched, total_steps=cfg.epochs * steps,
                                          warmup_steps=int(cfg.warmup_epochs * steps),
                                          step_every=int(cfg.step_epochs * steps), gamma=cfg.step_gamma,
                                          milestones=tuple(int(m * steps) for m in cfg.step_milestones))
        self.amp_dtype = AMP_DTYPES.get(cfg.amp) if cfg.amp is not None else None
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
        net, self.ddp = model, None
        if d.enabled:
            net = self.ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index]
                                                                 if device.type == "cuda" else None)
        if cfg.compile:
            net = torch.compile(net)
        self.net = net
        self.eval_model = self.ema.module if self.ema is not None else model

    def _check_files(self, train_set, val_set) -> list[tuple[str, BadFile]]:
        """Every file of the datasets read from files checked before anything is written (each rank checks
        its share, in threads): one error naming the bad ones, or with ``skip_bad_files`` they are left out."""
        cfg, d = self.cfg, self.d
        found = []
        for split, dataset in (("train", train_set), ("val", val_set)):
            if not checks_files(dataset):
                continue
            mine = find_bad_files(dataset, range(d.rank, len(dataset), d.world_size),
                                  progress=cfg.progress and d.is_main, desc=f"checking the {split} files")
            bad = sorted((b for part in all_gather_objects(mine, d) for b in part), key=lambda b: b.index)
            if not bad:
                continue
            total = len(dataset)
            listed = "; ".join(map(str, bad[:5])) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
            if not cfg.skip_bad_files:
                raise ValueError(f"train: {len(bad)} of the {total} {split} files of {cfg.data!r} cannot be used: "
                                 f"{listed}; repair or remove them, or leave them out with --skip-bad-files")
            dataset.drop_items([b.index for b in bad])
            if d.is_main:
                where = f" (all in {os.path.join(self.out, rundir.BAD_FILES)})" if self.out else ""
                print(f"train: warning: leaving out {len(bad)} of the {total} {split} files of {cfg.data!r} that "
                      f"cannot be used{where}: {listed}", file=sys.stderr, flush=True)
            found += [(split, b) for b in bad]
        return found

    # -- restore -------------------------------------------------------------------------------
    def restore(self) -> None:
        """Continue from ``last.state.pt`` (with ``resume``), then write the run record (the first write)."""
        cfg, d, out = self.cfg, self.d, self.out
        if cfg.resume:
            assert out is not None  # _check: resume needs out
            state = ckpt.load_state(os.path.join(out, ckpt.LAST_STATE))
            check_resumable(state["recipe"], cfg.recipe(), state["epoch"])
            self.model.load_state_dict(state["model"])
            try:
                self.optimizer.load_state_dict(state["optimizer"])
            except ValueError as e:
                raise ValueError(f"train: cannot resume {out}: its optimiser state does not fit this model's "
                                 f"parameter groups ({e}); runs saved before no_weight_decay() was honoured have "
                                 f"other groups for models that name parameters in it") from None
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            ckpt.set_rng_state(state["rng"])
            self.start_epoch, self.start_batch, self.global_step = state["epoch"], state["batch"], state["global_step"]
            self.saved_at = (self.start_epoch, self.start_batch)
            self.nonfinite_steps = state.get("nonfinite_steps", 0)  # absent from states saved before it was kept
            self.best, self.rows, self.running = state["best"], state["rows"], state["running"]
        self.model_meta, self.log = {}, None
        if out and d.is_main:
            remove_temporaries(out, rundir.RUN_FILES)  # of writes killed half-way
            run_cfg = rundir.data_pretrained_cfg(cfg.data, self.train_set, self.sample_shape, self.pretrained_cfg)
            with rundir.replacing_run(out) if cfg.overwrite else contextlib.nullcontext():
                record = rundir.write_record(out, _config(cfg), self.train_set, run_cfg, self.custom_model,
                                             **self.task.record_fields(cfg, self.train_set), **_elastic_record())
            self.recorded = True
            if self.bad_files:
                rundir.write_bad_files(out, self.bad_files)
            # the weights carry what rebuilds their model, unless the record cannot name one
            self.model_meta = {} if self.custom_model else rundir.model_metadata(record)
            self.log = RunLoggers(cfg.logger, out, columns=self.task.columns(), rows=self.rows, config=_config(cfg))

    def close_loggers(self, ok: bool = True) -> None:
        if self.log is not None:
            self.log.close(ok=ok)

    def record_status(self, status: str, error: str | None = None) -> None:
        """How the run stands, in its record (rank 0, once the record is written); a failure to write it
        while the run fails leaves the run's own error to be reported."""
        if not self.recorded:
            return
        assert self.out is not None  # recorded: run.json is in out
        if status == "finished":
            rundir.set_status(self.out, status)
            return
        with contextlib.suppress(OSError, ValueError):
            rundir.set_status(self.out, status, error)

    # -- save and log --------------------------------------------------------------------------
    def save(self, epoch: int, batch: int, row: dict | None) -> None:
        """``best`` when ``row`` beats it, then ``last`` and the training state (rank 0 writes)."""
        task, out = self.task, self.out if self.d.is_main else None  # out: where this process writes
        self.saved_at = (epoch, batch)
        if row is not None and (self.best is None or task.best_value(row) > self.best[task.best]):
            self.best = {"epoch": row["epoch"], task.best: task.best_value(row)}
            if out:
                ckpt.save_weights(os.path.join(out, ckpt.BEST_WEIGHTS), self.eval_model.state_dict(),
                                  dict(self.model_meta, epoch=row["epoch"], **{task.best: row[task.best]}))
        if not out:
            return
        ckpt.save_weights(os.path.join(out, ckpt.LAST_WEIGHTS), self.eval_model.state_dict(),
                          dict(self.model_meta, epoch=epoch, batch=batch))
        ckpt.save_state(os.path.join(out, ckpt.LAST_STATE), dict(
            recipe=self.cfg.recipe(), model=self.model.state_dict(),
            ema=self.ema.state_dict() if self.ema is not None else None, optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(), rng=ckpt.rng_state(),
            epoch=epoch, batch=batch, global_step=self.global_step, best=self.best,
            rows=self.rows, running=self.running, nonfinite_steps=self.nonfinite_steps))

    # -- train one epoch -----------------------------------------------------------------------
    def train_epoch(self, epoch: int, stop: "_StopFlag") -> tuple[bool, int, float]:
        """Train ``epoch`` from ``start_batch``; ``(interrupted, images, seconds)``."""
        cfg, d, device, task = self.cfg, self.d, self.device, self.task
        steps, start_batch = self.batches_per_epoch, self.start_batch
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        order = torch.randperm(len(self.train_set), generator=torch.Generator().manual_seed(_mix(cfg.seed, epoch)))
        batches = order[:steps * cfg.batch_size].view(steps, cfg.batch_size)
        batches = batches[start_batch:, d.rank::d.world_size]  # (steps, batch per rank)
        loader = DataLoader(self.train_set, batch_sampler=batches.tolist(), num_workers=cfg.workers,
                            pin_memory=device.type == "cuda", generator=torch.Generator(), collate_fn=task.collate_fn)
        bar = None
        if cfg.progress and d.is_main:
            from tqdm import tqdm
            bar = tqdm(total=steps, initial=start_batch, desc=f"epoch {epoch + 1}/{cfg.epochs}", dynamic_ncols=True,
                       leave=False)
        self.model.train()
        epoch_start, images, interrupted = time.perf_counter(), 0, False
        try:
            for batch, data in enumerate(loader, start=start_batch):
                if self.batch_transform is not None:
                    data = self.batch_transform(data, seed=_mix(cfg.seed, epoch, batch, d.rank))
                first = batch - batch % cfg.accum_steps  # the micro-batches first..last make one optimiser step
                last = min(first + cfg.accum_steps, steps) - 1
                if batch == first:
                    self.optimizer.zero_grad(set_to_none=True)
                    # what a skipped step must not keep: the group's sums and what its forwards did to the
                    # buffers (BatchNorm statistics)
                    non_finite, running = False, self.running.clone()
                    buffers = [b.detach().clone() for b in self.model.buffers()] if cfg.skip_nonfinite else None
                # DDP averages the gradients over ranks at the group's last backward only
                sync = self.ddp.no_sync() if self.ddp is not None and batch < last else contextlib.nullcontext()
                with sync:
                    with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                        loss, sums = task.forward(self.net, data, cfg, device)
                    flags = torch.tensor([not torch.isfinite(loss).item(), stop.requested is not None],
                                         dtype=torch.float64)
                    step_stats = all_sum(torch.cat([sums, flags]).to(device), d).cpu()
                    n = len(sums)
                    if step_stats[n] > 0 and not non_finite:
                        self._non_finite(loss, epoch, batch)  # past --skip-nonfinite: stops the run
                        non_finite = True
                    # every rank knows: its gradients are dropped at the step, after DDP's reduction as usual
                    self.scaler.scale(loss / (last - first + 1)).backward()
                self.running += step_stats[:n]
                images += int(step_stats[n - 1])
                if bar is not None:
                    ips = images / max(time.perf_counter() - epoch_start, 1e-9)
                    bar.set_postfix(**task.postfix(self.running), img_s=f"{ips:.0f}", refresh=False)
                    bar.update()
                if batch < last:
                    continue
                if non_finite:
                    self.running = running
                    assert buffers is not None  # kept under skip_nonfinite, without which a non-finite loss stops
                    with torch.no_grad():
                        for b, saved in zip(self.model.buffers(), buffers):
                            b.copy_(saved)
                self._step(skip=non_finite)
                every = cfg.save_every_steps
                if every and self.global_step % every == 0 and batch + 1 < steps:  # the epoch's end saves anyway
                    self.save(epoch, batch + 1, None)
                if self.on_step is not None:
                    self.on_step(self.global_step)
                if step_stats[n + 1] > 0 or stop.requested is not None:
                    interrupted = True
                    if self.saved_at != (epoch, batch + 1):
                        self.save(epoch, batch + 1, None)
                    break
        finally:
            if bar is not None:
                bar.close()
        return interrupted, images, time.perf_counter() - epoch_start

    def _step(self, skip: bool = False) -> None:
        """The optimiser step on the gradients accumulated since the last one; ``skip``: none (a non-finite loss),
        counted, the schedule moving on as it does when the fp16 gradient scaler skips a step."""
        cfg = self.cfg
        if skip:
            self.nonfinite_steps += 1
            self.scheduler.step()
            self.global_step += 1
            return
        if cfg.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.global_step += 1

    def _non_finite(self, loss: torch.Tensor, epoch: int, batch: int) -> None:
        """A non-finite loss in the current step: skipped with a warning while ``skip_nonfinite`` allows, else
        :class:`NonFiniteLossError`."""
        out, saved, limit = self.out, self.saved_at, self.cfg.skip_nonfinite
        value = loss.item() if not torch.isfinite(loss) else "non-finite on another rank"
        where = (f"the loss became {value} at step {self.global_step + 1} (epoch {epoch + 1}, batch {batch + 1} of "
                 f"{self.batches_per_epoch})")
        if self.nonfinite_steps < limit:
            if self.d.is_main:
                print(f"train: warning: {where}; skipping that step ({self.nonfinite_steps + 1} of at most {limit}, "
                      f"--skip-nonfinite)", file=sys.stderr, flush=True)
            return
        kept = (f"the last good checkpoint is {os.path.join(out, ckpt.LAST_STATE)} (epoch {saved[0]}, "
                f"batch {saved[1]})" if out and saved else "no checkpoint was written")
        skipped = f" after {limit} skipped (--skip-nonfinite {limit})" if limit else ""
        raise NonFiniteLossError(
            f"train: {where}{skipped}; stopped before updating the weights; {kept}. "
            f"Lower the learning rate or clip gradients (--clip-grad).")

    # -- evaluate ------------------------------------------------------------------------------
    def evaluate(self, **kw) -> tuple[dict, object]:
        """The validation metrics of the evaluated weights (the EMA's when on), every rank alike."""
        return self.task.evaluate(self.eval_model, self.val_set, batch_size=self.cfg.eval_batch_size,
                                  device=self.device, d=self.d, **kw)

    def end_epoch(self, epoch: int, epoch_start: float, images: int, seconds: float) -> tuple[dict, object]:
        """Evaluate after ``epoch``, log its row, save, and start the next epoch's sums."""
        cfg, d, task = self.cfg, self.d, self.task
        train_ips = images / max(seconds, 1e-9)
        broadcast_buffers(self.model, d)
        values, result = self.evaluate(workers=cfg.workers, amp_dtype=self.amp_dtype)
        row = dict(epoch=epoch + 1, **task.train_metrics(self.running), **values,
                   lr=base_lr(self.optimizer), seconds=time.perf_counter() - epoch_start,
                   train_images_per_s=train_ips)
        self.rows.append(row)  # every rank keeps the rows: their summaries count the same epochs
        if self.log is not None:
            self.log.log(row)
        if d.is_main:  # with or without progress bars: logs keep one line an epoch
            print(f"epoch {epoch + 1}/{cfg.epochs}  train loss {row['train_loss']:.4f}  {task.describe(values)}  "
                  f"({row['seconds']:.1f} s, {train_ips:.0f} img/s)", flush=True)
        self.start_batch, self.running = 0, self._zeros()
        self.save(epoch + 1, 0, row)
        return row, result


def _train(cfg: TrainConfig, d: Dist, model, train_set, val_set, on_step) -> dict:
    task = get_task(cfg.task)
    task.check(cfg)
    run = _Loop(cfg, d, task, on_step)
    run.build(model, train_set, val_set)
    run.restore()  # opens the loggers on rank 0
    try:
        summary = _run(run)
    except KeyboardInterrupt:
        run.close_loggers(ok=False)
        run.record_status("interrupted")
        raise
    except BaseException as e:
        run.close_loggers(ok=False)
        run.record_status("failed", one_line(e))
        raise
    run.close_loggers()
    run.record_status("interrupted" if summary["interrupted"] else "finished")
    return summary


def _run(run: _Loop) -> dict:
    """The epochs of ``run`` (built and restored), then its summary."""
    cfg, d, task, out = run.cfg, run.d, run.task, run.out
    started = time.perf_counter()
    interrupted, result, train_ips = False, None, 0.0
    values: dict | None = None
    resume_hint = f"continue with `attnvision train --resume {out}`" if out else "no out directory: nothing is saved"

    def notice(what: str) -> str:
        return (f"train: {what}: stopping at the end of the current step{' and saving ' + out if out else ''}; "
                f"{'press Ctrl-C' if what == 'Ctrl-C' else what} again to quit at once")

    def abort(what: str) -> str:
        if out and os.path.isfile(os.path.join(out, ckpt.LAST_STATE)):
            return f"train: stopped at once by a second {what}; {out} keeps its last complete checkpoint; {resume_hint}"
        return f"train: stopped at once by a second {what}, before anything was saved; start the run again"
    with _StopFlag(notice if d.is_main else None, abort) as stop:
        for epoch in range(run.start_epoch, cfg.epochs):
            epoch_start = time.perf_counter()
            interrupted, images, seconds = run.train_epoch(epoch, stop)
            if interrupted:
                break
            train_ips = images / max(seconds, 1e-9)
            values, result = run.end_epoch(epoch, epoch_start, images, seconds)
    barrier(d)
    all_rows = run.rows
    if result is None and not interrupted and all_rows:  # resumed after the last epoch: evaluate once
        values, result = run.evaluate()
    elif result is None:
        values = None
    best = run.best
    summary = dict(
        model=cfg.model, data=cfg.data, seed=cfg.seed, model_kwargs=cfg.model_kwargs, attach=cfg.attach,
        epochs=cfg.epochs, epochs_done=all_rows[-1]["epoch"] if all_rows else 0, interrupted=interrupted,
        stop_signal=stop.requested.name if interrupted and stop.requested is not None else None,
        **task.summary_metrics(_as_dict(result, values)),
        **{f"best_{task.best}": best[task.best] if best else None}, best_epoch=best["epoch"] if best else None,
        params=run.prof.params, macs=run.prof.macs, input_size=list(run.sample_shape),
        train_images_per_s=train_ips or (all_rows[-1]["train_images_per_s"] if all_rows else None),
        infer_images_per_s=_images_per_s(result),
        seconds=time.perf_counter() - started, world_size=d.world_size, nonfinite_steps=run.nonfinite_steps,
        config=_config(cfg),
    )
    summary.update(task.summary_fields(cfg))
    if out and d.is_main and not interrupted:
        atomic_write_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=1) + "\n")
        if run.log is not None:
            run.log.finish(summary)
    if interrupted and d.is_main:
        print(f"train: interrupted: saved {os.path.join(out, ckpt.LAST_STATE)}; {resume_hint}" if out else
              f"train: interrupted: {resume_hint}", file=sys.stderr, flush=True)
    return summary


def _as_dict(result, values: dict | None) -> dict | None:
    """Everything an evaluation measured: the dense tasks' result dict, or the classification row values."""
    return result if isinstance(result, dict) else values


def _images_per_s(result) -> float | None:
    if result is None:
        return None
    return result["images_per_s"] if isinstance(result, dict) else result.images_per_s
