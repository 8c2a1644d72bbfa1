"""The training core: ``train(TrainConfig(...))``, ``evaluate``; comparisons are in :mod:`attnvision.compare`."""
from __future__ import annotations

from .config import TrainConfig
from .evaluate import EvalResult, evaluate
from .trainer import NonFiniteLossError, train

__all__ = ["EvalResult", "NonFiniteLossError", "TrainConfig", "evaluate", "train"]
