"""A run directory is a record of one run: what trained there, and all that ``eval`` and ``cam`` need.

``run.json`` (written before the first step) holds the run's ``status`` (running, finished, interrupted,
or failed with its error), the model (name, kwargs, attached attention), the data (spec, number of
classes, class names) and the preprocessing the model was trained with, as a ``pretrained_cfg``
(input size ``(C, H, W)``, one mean/std per channel, crop_pct), and the full training configuration.
``attnvision eval --run DIR`` and ``attnvision cam --run DIR`` rebuild the model from it. The weights
files carry the model part of the record in their safetensors metadata, so that one file alone
rebuilds its model (``attnvision.load_model``). ``bad_files.txt`` lists the data files a run left out
(``skip_bad_files``).

``train`` refuses to write into a directory that holds another run unless it is asked to
continue it (``resume``) or to replace it (``overwrite``); a replaced run's files are set aside
when the new run writes its first one, put back if that write fails, and removed once it succeeded.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

from torch import nn

from ..attach import attach as attach_attention
from ..data import parse_spec
from ..factory import create_model, fit_cfg_to_channels
from ..io import atomic_write_text, file_operation, read_json
from . import checkpoints as ckpt
from .config import RUNTIME_KEYS, plain
from .loggers import WANDB_ID

RUN_RECORD = "run.json"
BAD_FILES = "bad_files.txt"  # the data files a run left out (skip_bad_files)
# Files a run writes; a directory holding any of them holds a run.
RUN_FILES = (RUN_RECORD, "summary.json", "metrics.csv", "metrics.jsonl", ckpt.LAST_WEIGHTS, ckpt.BEST_WEIGHTS,
             ckpt.LAST_STATE, "eval.json", "tensorboard", "wandb", WANDB_ID, BAD_FILES)
# what a run writes before its first step: a directory holding only these has no training to lose
_START_FILES = (RUN_RECORD, BAD_FILES)


def create_run_model(name: str, model_kwargs: dict, *, num_classes: int, in_chans: int, attach: str | None = None,
                     attach_init: str = "identity", who: str = "train") -> nn.Module:
    """``create_model`` for a dataset's classes and channels (then ``attach``), refusing model
    kwargs that contradict the data instead of failing with "multiple values for keyword"."""

    if not isinstance(model_kwargs, dict):
        raise TypeError(f"{who}: model_kwargs must be a dict, got {type(model_kwargs).__name__}")
    for key, value in (("in_chans", in_chans), ("num_classes", num_classes)):
        if key in model_kwargs and model_kwargs[key] != value:
            raise ValueError(f"{who}: --model-kwargs sets {key}={model_kwargs[key]!r} but the data has {value} "
                             f"{'channels' if key == 'in_chans' else 'classes'}; leave {key} out of "
                             f"--model-kwargs (it follows the data)")
    kwargs = {k: v for k, v in model_kwargs.items() if k not in ("in_chans", "num_classes")}
    model = create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if attach:
        attach_attention(model, attach, init=attach_init)
    return model


def data_pretrained_cfg(spec: str, dataset, sample_shape, model_cfg: dict) -> dict:
    """The preprocessing a model trained on ``dataset`` expects: the dataset's own statistics for
    the built-in data, else the model's (the ones ``create_dataset`` normalised image files with);
    image folders are resized and centre-cropped by ``crop_pct``, other data is used whole."""

    model_cfg = fit_cfg_to_channels(model_cfg, sample_shape[0])
    mean, std = getattr(dataset, "mean", None), getattr(dataset, "std", None)
    if mean is None or std is None:
        mean, std = model_cfg.get("mean"), model_cfg.get("std")
    if mean is None or std is None:  # a custom model and data: unknown, recorded as such
        mean = std = None
    cfg = dict(model_cfg, input_size=tuple(sample_shape), mean=as_tuple(mean), std=as_tuple(std))
    cfg["crop_pct"] = model_cfg.get("crop_pct", 0.875) if parse_spec(spec)[0] == "imagefolder" else 1.0
    return cfg


def as_tuple(values):
    return None if values is None else tuple(values)


def write_record(out: str, config: dict, dataset, pretrained_cfg: dict, custom_model: bool = False,
                 **extra) -> dict:
    """Write ``out/run.json``; ``custom_model``: the model was passed to ``train`` in Python, so
    the record cannot name a registered model to rebuild (``model`` is null). ``extra``: for a
    detection/segmentation run ``task``, ``backbone`` and the head builder's complete ``model_kwargs``;
    under torchrun the job's ``elastic_run_id``."""
    num_classes = dataset.num_classes
    classes = list(getattr(dataset, "classes", None) or [str(i) for i in range(num_classes)])
    keep = ("input_size", "mean", "std", "crop_pct")
    record = dict(status="running", model=None if custom_model else config["model"],
                  model_kwargs=config["model_kwargs"],
                  attach=config["attach"], attach_init=config["attach_init"], data=config["data"],
                  num_classes=num_classes, in_chans=pretrained_cfg["input_size"][0], classes=classes,
                  pretrained_cfg={k: pretrained_cfg[k] for k in keep}, config=config)
    record.update(extra)
    atomic_write_text(os.path.join(out, RUN_RECORD), json.dumps(record, indent=1) + "\n")
    return record


STATUSES = ("running", "finished", "interrupted", "failed")


def set_status(out: str, status: str, error: str | None = None) -> None:
    """Record how the run in ``out`` stands in its ``run.json``: ``running`` (from its start; also what a run
    killed outright leaves), ``finished``, ``interrupted`` (stopped by Ctrl-C: resumable) or ``failed`` (with
    its ``error``, one line)."""
    if status not in STATUSES:
        raise ValueError(f"set_status: status must be one of {STATUSES}, got {status!r}")
    path = os.path.join(out, RUN_RECORD)
    record = read_json(path, "train")
    record["status"] = status
    record.pop("error", None)
    if error is not None:
        record["error"] = error
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def write_bad_files(out: str, bad: list) -> None:
    """``out/bad_files.txt``: one line per file left out, ``SPLIT<TAB>PATH<TAB>REASON``."""
    atomic_write_text(os.path.join(out, BAD_FILES), "".join(f"{split}\t{b.path}\t{b.reason}\n" for split, b in bad))


# The safetensors metadata entry of a run's weights that holds its model record, so that a lone
# ``best.safetensors`` rebuilds its model (``attnvision.load_model``).
MODEL_METADATA = "attnvision.model"
_MODEL_FIELDS = ("model", "model_kwargs", "attach", "attach_init", "num_classes", "in_chans", "pretrained_cfg")


_DENSE_FIELDS = ("task", "backbone")  # detection/segmentation records only


def model_metadata(record: dict) -> dict[str, str]:
    """The part of a run record that rebuilds the model, as safetensors metadata (strings only)."""
    fields = _MODEL_FIELDS + tuple(k for k in _DENSE_FIELDS if k in record)
    return {MODEL_METADATA: json.dumps({k: record[k] for k in fields})}


def record_from_metadata(metadata: dict | None, path: str, who: str) -> dict:
    """The model record stored by :func:`model_metadata` in a weights file; a clear error when absent."""
    text = (metadata or {}).get(MODEL_METADATA)
    if text is None:
        raise ValueError(f"{who}: {path!r} holds no model record (only the weights of a registered model trained "
                         f"by `attnvision train` carry one); build the model with create_model and load the weights "
                         f"with load_checkpoint")
    try:
        record = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{who}: the model record of {path!r} is damaged ({e})") from None
    if not isinstance(record, dict) or not set(_MODEL_FIELDS) <= set(record):
        raise ValueError(f"{who}: the model record of {path!r} lacks {sorted(set(_MODEL_FIELDS) - set(record or {}))}")
    return record


def read_record(run_dir: str, who: str) -> dict:
    """The ``run.json`` of ``run_dir``; a clear error when the directory is not a run."""
    path = os.path.join(run_dir, RUN_RECORD)
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{who}: no run directory at {run_dir!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{who}: {run_dir!r} holds no {RUN_RECORD}: it is not a run directory written by "
                                f"`attnvision train` (or was written by a version before run records)")
    record = read_json(path, who)
    if not isinstance(record, dict) or not {"model", "num_classes", "pretrained_cfg", "config"} <= set(record):
        raise ValueError(f"{who}: {path!r} is not a run record (missing model, num_classes, pretrained_cfg or config)")
    return record


def record_from_args(args, who: str, model_flags) -> dict:
    """The record of ``args.run`` for a command (``who``) whose ``--run`` replaces its ``model_flags``
    (argparse names): giving both is an error naming the flags to drop."""
    clashes = [f"--{k.replace('_', '-')}" for k in model_flags if getattr(args, k)]
    if clashes:
        raise ValueError(f"{who}: --run {args.run} gives the model already; drop {', '.join(clashes)}")
    return read_record(args.run, who)


def resumed_config(out: str, given: dict) -> dict:
    """The configuration to continue the run in ``out``: its stored one, updated by ``given``
    (settings named on the command line), which must agree with it but for ``epochs`` and
    the settings that do not change what is trained (``config.RUNTIME_KEYS``)."""

    if not os.path.isfile(os.path.join(out, RUN_RECORD)) and os.path.isfile(os.path.join(out, ckpt.LAST_STATE)):
        return dict(given)  # a run from before run records: the options given are the recipe (checked on load)
    stored = read_record(out, "train --resume")["config"]
    changed = [f"{k} was {stored[k]!r}, now {v!r}" for k, v in given.items()
               if k in stored and k not in RUNTIME_KEYS and k != "epochs" and plain(v) != plain(stored[k])]
    if changed:
        raise ValueError(f"train: cannot resume {out!r} with other settings: {', '.join(changed)}; drop those "
                         f"options to continue the run (only --epochs may change, and how it runs: --workers, "
                         f"--threads, --device, --no-progress, --logger, --save-every-steps, --skip-nonfinite), or "
                         f"start a new run (another --out, or --overwrite)")
    return {**stored, **given}


def held_run(out: str) -> list[str]:
    """The run files present in ``out`` (empty when it holds no run)."""
    return [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))] if os.path.isdir(out) else []


def describe(out: str) -> str:
    """A few words on the run in ``out``: model, data, how it stands (its record's ``status``)."""
    words, status = [], None
    for name in (RUN_RECORD, "summary.json"):
        try:
            with open(os.path.join(out, name), encoding="utf-8") as f:
                info = json.load(f)
            words.append(f"{info['model'] or 'a custom model'} on {info['data']}")
            status = info.get("status"), info.get("error")
            break
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    if os.path.isfile(os.path.join(out, "summary.json")):
        words.append("finished")
    elif status and status[0] == "failed":
        words.append(f"failed: {status[1]}" if status[1] else "failed")
    elif status and status[0] == "interrupted":
        words.append("interrupted")
    else:  # running, or killed outright (a record from before statuses says nothing)
        words.append("unfinished")
    return ", ".join(words)


def check_out(out: str | None, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run over the run already in ``out`` unless told to resume or overwrite it."""
    if resume and overwrite:
        raise ValueError("train: resume and overwrite exclude each other: continue the run in out, or replace it")
    if not out or resume or overwrite:
        return
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"train: out {out!r} is a file, not a directory")
    found = held_run(out)
    if [f for f in found if f not in _START_FILES]:  # a record alone: the run stopped before its first step
        raise ValueError(f"train: {out!r} already holds a run ({describe(out)}: {', '.join(found)}); "
                         f"continue it with --resume, replace it with --overwrite, or choose another --out")


@contextlib.contextmanager
def replacing_run(out: str):
    """Around the first write of a new run replacing the run in ``out`` (``overwrite``): the old run's
    files are set aside first (renamed into a hidden folder of ``out``), put back when the block fails
    and removed once it succeeded, so that a folder the new run cannot write into (read-only, full)
    keeps the old run whole. Nothing else of the directory is touched."""
    found = held_run(out)
    if not found:
        yield
        return
    with file_operation("replace the run in", out):
        aside = tempfile.mkdtemp(prefix=".replaced-run.", dir=out)
    moved = []
    try:
        for name in found:
            with file_operation("set aside", os.path.join(out, name)):
                os.replace(os.path.join(out, name), os.path.join(aside, name))
            moved.append(name)
        yield
    except BaseException:
        for name in moved:
            with contextlib.suppress(OSError):
                os.replace(os.path.join(aside, name), os.path.join(out, name))
        with contextlib.suppress(OSError):  # stays only when a file could not be put back
            os.rmdir(aside)
        raise
    with file_operation("remove the replaced run in", aside):
        shutil.rmtree(aside)
