"""Where a run's numbers go: ``TrainConfig(logger="csv,tensorboard,wandb")`` (``--logger``).

Each logger is a plug-in of :data:`LOGGERS` and receives, on rank 0 only, the run's configuration at
the start, one row per epoch (the columns of ``metrics.csv``) and the summary at the end (the contents
of ``summary.json``; not for an interrupted run, which writes no summary either):

- ``csv`` (the default): ``metrics.csv`` and ``metrics.jsonl`` in the run directory, rewritten
  atomically after every epoch from all the rows so far (a resumed run's stored rows included);
- ``tensorboard``: events in ``RUN_DIR/tensorboard`` (the configuration as text at the start, one
  scalar per column and epoch, the final metrics as scalars ``summary/*`` and as hparams, so that
  TensorBoard's HParams tab lines runs up); a resumed run drops events from the epochs it redoes;
- ``wandb``: a Weights & Biases run (``wandb.init(config=...)``, ``log(row, step=epoch)``, the summary,
  ``finish``) whose id is kept in ``RUN_DIR/wandb_id.txt``, so that a resumed run continues it
  (``resume="allow"``). ``WANDB_MODE=offline`` keeps it on disk, ``WANDB_DIR`` says where (default:
  the run directory), ``WANDB_PROJECT`` names the project (default ``attnvision``).

A logger of one's own::

    @LOGGERS.register("mine")
    class Mine(RunLogger):
        def log(self, row): ...

and ``--logger csv,mine`` uses it.
"""
from __future__ import annotations

import importlib
import json
import os
import secrets
import string

from ..io import atomic_write_text
from ..registry import Registry

WANDB_ID = "wandb_id.txt"  # the W&B run id of a run directory, so that resuming continues that run


class RunLogger:
    """One destination of a run's metrics; subclasses override what they record.

    ``out`` is the run directory, ``columns`` the columns of an epoch's row, ``rows`` the rows logged
    before (a resumed run's; empty otherwise), ``config`` the run's configuration. ``requires`` names
    the module the logger needs and ``extra`` the package extra that installs it.
    """

    requires: str | None = None
    extra: str | None = None

    def __init__(self, out: str, *, columns: tuple[str, ...], rows: list[dict], config: dict):
        self.out, self.columns, self.config = out, tuple(columns), config
        self.start_epoch = rows[-1]["epoch"] if rows else 0

    @classmethod
    def check_available(cls, name: str, who: str) -> None:
        """Raise a one-line ``ImportError`` naming the extra to install when ``requires`` is missing."""
        if cls.requires is None:
            return
        try:
            importlib.import_module(cls.requires)
        except ImportError:
            raise ImportError(f"{who}: logger {name!r} needs {cls.requires}: pip install \"attnvision[{cls.extra}]\""
                              ) from None

    def log(self, row: dict) -> None:
        """One epoch's row (``row["epoch"]`` counts from 1)."""

    def finish(self, summary: dict) -> None:
        """The run's summary, once it has ended (not when it was interrupted)."""

    def close(self, ok: bool = True) -> None:
        """Release the logger; ``ok=False`` when the run stopped on an error."""


LOGGERS: Registry[type[RunLogger]] = Registry("logger", lower=True)


def logger_names(spec, who: str = "train") -> list[str]:
    """The logger names of ``spec`` (``"csv,tensorboard"``), each registered and given once."""
    if not isinstance(spec, str):
        raise TypeError(f"{who}: logger must be a string of comma-separated names, got {spec!r}")
    names = [n.strip().lower() for n in spec.split(",")]
    if not all(names):
        raise ValueError(f"{who}: logger takes comma-separated names ({', '.join(LOGGERS.names())}), got {spec!r}")
    for name in names:
        LOGGERS.get(name, f"{who}: logger")
    if len(set(names)) != len(names):
        raise ValueError(f"{who}: logger names each logger once, got {spec!r}")
    return names


def check_loggers(spec, who: str = "train") -> list[str]:
    """:func:`logger_names`, each logger's library importable (else one line naming the extra)."""
    names = logger_names(spec, who)
    for name in names:
        LOGGERS.get(name).check_available(name, who)
    return names


class RunLoggers:
    """The loggers of ``spec`` for the run in ``out``, used as one."""

    def __init__(self, spec: str, out: str, *, columns: tuple[str, ...], rows: list[dict], config: dict,
                 who: str = "train"):
        self.loggers: list[RunLogger] = []
        try:
            for name in check_loggers(spec, who):
                self.loggers.append(LOGGERS.get(name)(out, columns=columns, rows=list(rows), config=config))
        except BaseException:
            self.close(ok=False)
            raise

    def log(self, row: dict) -> None:
        for logger in self.loggers:
            logger.log(row)

    def finish(self, summary: dict) -> None:
        for logger in self.loggers:
            logger.finish(summary)

    def close(self, ok: bool = True) -> None:
        for logger in self.loggers:
            logger.close(ok)
        self.loggers = []


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


@LOGGERS.register("csv")
class CSVLogger(RunLogger):
    """``metrics.csv`` and ``metrics.jsonl``, rewritten atomically from every row so far."""

    def __init__(self, out: str, *, columns: tuple[str, ...], rows: list[dict], config: dict):
        super().__init__(out, columns=columns, rows=rows, config=config)
        self.rows = list(rows)

    def log(self, row: dict) -> None:
        self.rows.append(row)
        lines = [",".join(self.columns)] + [",".join(_fmt(r[c]) for c in self.columns) for r in self.rows]
        atomic_write_text(os.path.join(self.out, "metrics.csv"), "\n".join(lines) + "\n")
        atomic_write_text(os.path.join(self.out, "metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in self.rows))


def _scalars(values: dict) -> dict[str, float]:
    """The numbers of ``values`` (not booleans, lists or nested settings)."""
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


@LOGGERS.register("tensorboard")
class TensorBoardLogger(RunLogger):
    """TensorBoard events in ``RUN_DIR/tensorboard``: scalars per epoch, the config as text, the final
    metrics as hparams."""

    requires, extra = "tensorboard", "tb"

    def __init__(self, out: str, *, columns: tuple[str, ...], rows: list[dict], config: dict):
        from torch.utils.tensorboard import SummaryWriter

        super().__init__(out, columns=columns, rows=rows, config=config)
        # a resumed run redoes the epochs after its stored rows: their old events are dropped
        self.writer = SummaryWriter(os.path.join(out, "tensorboard"),
                                    purge_step=self.start_epoch + 1 if rows else None)
        text = json.dumps(config, indent=1)
        self.writer.add_text("config", "    " + text.replace("\n", "\n    "), self.start_epoch)
        self.writer.flush()
        self.last_epoch = self.start_epoch

    def log(self, row: dict) -> None:
        self.last_epoch = row["epoch"]
        for key, value in _scalars(row).items():
            if key != "epoch":
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()

    def finish(self, summary: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        # what the run measured, not the settings the summary repeats (seed, epochs: in the hparams)
        metrics = {f"summary/{k}": v for k, v in _scalars(summary).items()
                   if k not in self.config and k != "world_size"}
        settings = {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
                    for k, v in self.config.items() if v is not None}
        writer = self.writer.file_writer
        assert writer is not None  # opened by SummaryWriter() and kept until close()
        for summary_proto in hparams(settings, metrics):
            writer.add_summary(summary_proto, self.last_epoch)
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, self.last_epoch)
        self.writer.flush()

    def close(self, ok: bool = True) -> None:
        self.writer.close()


def _new_wandb_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


@LOGGERS.register("wandb")
class WandbLogger(RunLogger):
    """A Weights & Biases run, continued when the run is resumed (its id is in ``RUN_DIR/wandb_id.txt``)."""

    requires, extra = "wandb", "wandb"

    def __init__(self, out: str, *, columns: tuple[str, ...], rows: list[dict], config: dict):
        import wandb

        super().__init__(out, columns=columns, rows=rows, config=config)
        id_path = os.path.join(out, WANDB_ID)
        if os.path.isfile(id_path):
            with open(id_path, encoding="utf-8") as f:
                run_id = f.read().strip()
        else:
            run_id = _new_wandb_id()
            atomic_write_text(id_path, run_id + "\n")
        self.run = wandb.init(id=run_id, resume="allow", dir=os.environ.get("WANDB_DIR") or out,
                              project=os.environ.get("WANDB_PROJECT") or "attnvision",
                              name=os.path.basename(os.path.abspath(out)))
        self.run.config.update(config, allow_val_change=True)  # a resumed run may have more epochs

    def log(self, row: dict) -> None:
        self.run.log(dict(row), step=row["epoch"])

    def finish(self, summary: dict) -> None:
        self.run.summary.update({k: v for k, v in summary.items() if k != "config"})

    def close(self, ok: bool = True) -> None:
        self.run.finish(exit_code=0 if ok else 1)
