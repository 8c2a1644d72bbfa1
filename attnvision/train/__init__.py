"""Training, evaluation and comparison: ``train(TrainConfig(...))``, ``evaluate``, ``compare``."""
from __future__ import annotations

from .evaluate import EvalResult, evaluate
from .trainer import NonFiniteLossError, TrainConfig, train

__all__ = ["EvalResult", "NonFiniteLossError", "TrainConfig", "evaluate", "train"]
