"""A run's model rebuilt from its record (``run.json``, or the record a run's weights carry)."""
from __future__ import annotations

from torch import nn

from ..train.rundir import as_tuple
from ..train.tasks import get_task


def model_from_record(record: dict, who: str) -> nn.Module:
    """The run's model (random weights), with the run's preprocessing as its ``pretrained_cfg``."""
    if record["model"] is None:
        raise ValueError(f"{who}: the run trained a model passed to train() in Python, which its record cannot "
                         f"rebuild; build it yourself and load the weights with attnvision.load_checkpoint")
    model = get_task(record.get("task", "classification")).model_from_record(record, who)
    cfg = dict(record["pretrained_cfg"])
    cfg["input_size"], cfg["mean"], cfg["std"] = (as_tuple(cfg[k]) for k in ("input_size", "mean", "std"))
    setattr(model, "pretrained_cfg", dict(getattr(model, "pretrained_cfg", {}) or {}, **cfg))
    return model
