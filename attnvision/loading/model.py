"""Models rebuilt from what a file or folder says it holds: a run's weights, a folder or Hub repository
written by ``save_pretrained``, a transformers VAN folder."""
from __future__ import annotations

import os

from safetensors import SafetensorError, safe_open
from torch import nn

from ..factory import create_model
from ..io import read_json
from ..models._base import model_cfg
from ..models.van import hf_van_variant
from ..train.rundir import record_from_metadata
from ..weights import hf_weights_file, load_checkpoint
from ..weights.hub import (CONFIG_FILE, WEIGHTS_FILE, describe_config, hub_file, is_hub_spec, is_own_config,
                           model_record, parse_hub_spec, read_folder_model, read_hub_model)
from .runs import model_from_record

HF_TORCH_WEIGHTS = "pytorch_model.bin"


def load_model(path) -> nn.Module:
    """A model rebuilt from a file or folder that says what it holds, with its weights loaded.

    - a run's ``best.safetensors`` / ``last.safetensors``: ``attnvision train`` stores the model
      record of ``run.json`` (name, kwargs, attached attention, classes, input channels and the
      preprocessing as ``pretrained_cfg``) in the safetensors metadata;
    - a Hugging Face ``save_pretrained`` folder of ``VanForImageClassification`` (``config.json``
      with ``model_type: "van"`` + ``model.safetensors`` or ``pytorch_model.bin``): the ``van_b*``
      whose widths, depths and MLP ratios the config gives, with its number of labels;
    - a folder written by :func:`~attnvision.save_pretrained` (``config.json`` with ``library_name:
      "attnvision"`` + ``model.safetensors``), or ``"hf-hub:ORG/NAME"`` (``@REVISION`` optional), such a
      repository on the Hugging Face Hub (or a transformers VAN repository), through the Hub cache
      (``HF_HUB_OFFLINE=1`` reads the cache only).

    The model is returned in training mode, as :func:`~attnvision.create_model` returns it.
    """
    if is_hub_spec(path):
        return _load_hub_repo(path)
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


def _load_own(config: dict, weights: str) -> nn.Module:
    model = model_from_record(model_record(config), "load_model")
    load_checkpoint(model, weights, source="attnvision")
    return model


def _load_hub_repo(spec: str) -> nn.Module:
    config = read_json(hub_file(spec, CONFIG_FILE, "load_model"), "load_model")
    if is_own_config(config):
        config, weights = read_hub_model(spec, "load_model")
        model = _load_own(config, weights)
        model_cfg(model)["hf_hub_id"] = parse_hub_spec(spec, "load_model")[0]
        return model
    if isinstance(config, dict) and config.get("model_type") == "van":  # transformers' VAN, read as its folder is
        try:
            weights = hub_file(spec, WEIGHTS_FILE, "load_model")
        except (ValueError, OSError) as first:  # older repositories hold the torch file only
            try:
                weights = hub_file(spec, HF_TORCH_WEIGHTS, "load_model")
            except (ValueError, OSError):
                raise first from None
        return _load_hf_folder(os.path.dirname(weights))
    raise ValueError(f"load_model: {spec} is neither an attnvision repository nor a transformers VAN: "
                     f"{describe_config(config)}")


def _load_hf_folder(folder: str) -> nn.Module:
    config_path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"load_model: the folder {folder!r} holds no config.json (a folder written by "
                                f"save_pretrained, or a Hugging Face save_pretrained folder, was expected)")
    config = read_json(config_path, "load_model")
    if is_own_config(config):
        return _load_own(*read_folder_model(folder, "load_model"))
    if not isinstance(config, dict) or config.get("model_type") != "van":
        raise ValueError(f"load_model: {folder!r} holds neither an attnvision model (save_pretrained) nor a "
                         f"transformers VAN (VanForImageClassification): {describe_config(config)}")
    name = hf_van_variant(config)
    labels = config.get("id2label") or {}
    model = create_model(name, num_classes=len(labels) or config.get("num_labels", 1000),
                         in_chans=config.get("num_channels", 3))
    load_checkpoint(model, hf_weights_file(folder, "load_model"), source="official")
    return model
