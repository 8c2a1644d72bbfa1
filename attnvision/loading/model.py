"""Models rebuilt from what a file or folder says it holds: a run's weights, a Hugging Face folder."""
from __future__ import annotations

import os

from safetensors import SafetensorError, safe_open
from torch import nn

from ..factory import create_model
from ..io import read_json
from ..models.van import hf_van_variant
from ..train.rundir import record_from_metadata
from ..weights import hf_weights_file, load_checkpoint
from .runs import model_from_record


def load_model(path) -> nn.Module:
    """A model rebuilt from a file or folder that says what it holds, with its weights loaded.

    - a run's ``best.safetensors`` / ``last.safetensors``: ``attnvision train`` stores the model
      record of ``run.json`` (name, kwargs, attached attention, classes, input channels and the
      preprocessing as ``pretrained_cfg``) in the safetensors metadata;
    - a Hugging Face ``save_pretrained`` folder of ``VanForImageClassification`` (``config.json``
      with ``model_type: "van"`` + ``model.safetensors`` or ``pytorch_model.bin``): the ``van_b*``
      whose widths, depths and MLP ratios the config gives, with its number of labels.

    The model is returned in training mode, as :func:`~attnvision.create_model` returns it.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return _load_hf_folder(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_model: no file or folder at {path!r}")
    if not path.endswith(".safetensors"):
        raise ValueError(f"load_model: {path!r} is not a .safetensors file of a run (nor a Hugging Face folder); "
                         f"a plain weights file does not say which model it is: use create_model(name, pretrained=)")
    try:
        with safe_open(path, "pt") as f:
            metadata = f.metadata()
    except (SafetensorError, OSError) as e:
        raise ValueError(f"load_model: {path!r} is not a valid safetensors file ({e})") from None
    model = model_from_record(record_from_metadata(metadata, path, "load_model"), "load_model")
    load_checkpoint(model, path, source="attnvision")
    return model


def _load_hf_folder(folder: str) -> nn.Module:
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"load_model: the folder {folder!r} holds no config.json (a Hugging Face "
                                f"save_pretrained folder was expected)")
    config = read_json(config_path, "load_model")
    if not isinstance(config, dict) or config.get("model_type") != "van":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise ValueError(f"load_model: {config_path!r} describes model_type {kind!r}; the Hugging Face "
                         f"models read are 'van' (VanForImageClassification)")
    name = hf_van_variant(config)
    labels = config.get("id2label") or {}
    model = create_model(name, num_classes=len(labels) or config.get("num_labels", 1000),
                         in_chans=config.get("num_channels", 3))
    load_checkpoint(model, hf_weights_file(folder, "load_model"), source="official")
    return model
