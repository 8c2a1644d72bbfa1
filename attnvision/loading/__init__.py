"""Loading: models rebuilt from runs, weights files that carry their record, and Hugging Face folders."""
from .model import load_model
from .runs import model_from_record

__all__ = ["load_model", "model_from_record"]
