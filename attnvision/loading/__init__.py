"""Loading and sharing: models rebuilt from runs, weights files that carry their record, folders and Hub
repositories (``load_model``), and repositories written or uploaded (``save_pretrained``, ``push_to_hub``)."""
from .hub import push_to_hub, save_pretrained
from .model import load_model
from .runs import model_from_record

__all__ = ["load_model", "model_from_record", "push_to_hub", "save_pretrained"]
