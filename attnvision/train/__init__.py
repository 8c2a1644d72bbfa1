"""Training, evaluation and comparison: ``train(TrainConfig(...))``, ``evaluate``, ``compare``."""
from __future__ import annotations

from .compare import compare, register_run_metric
from .evaluate import EvalResult, evaluate
from .trainer import NonFiniteLossError, TrainConfig, train

__all__ = ["EvalResult", "NonFiniteLossError", "TrainConfig", "compare", "evaluate", "register_run_metric", "train"]
