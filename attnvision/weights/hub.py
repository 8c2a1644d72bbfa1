"""Model repositories in attnvision's own format, on the Hugging Face Hub or in a local folder.

A repository written by :func:`attnvision.save_pretrained` holds

- ``config.json``: ``library_name: "attnvision"`` and what rebuilds the model: ``architecture`` (a
  registered name), ``model_kwargs``, ``num_classes``, ``in_chans``, ``attach`` / ``attach_init``
  (attention retrofitted by ``attnvision train --attach``), ``pretrained_cfg`` (the preprocessing the
  weights expect), for detection and segmentation ``task`` and ``backbone``, and for a training run
  ``classes`` and the whole run record under ``run``;
- ``model.safetensors``: the weights, in our key layout;
- ``README.md``: the model card.

``hf-hub:ORG/NAME`` (optionally ``@REVISION``) names such a repository on the Hub; its files come through
:func:`~attnvision.weights.download.fetch_weights`, so the Hub cache, tokens and ``HF_HUB_OFFLINE``
behave as they do for published weights. A repository in another format (a transformers or timm
``config.json``) is refused in one line that says what was found.
"""
from __future__ import annotations

import os
import re

from ..io import read_json
from .download import fetch_weights

HUB_PREFIX = "hf-hub:"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
LIBRARY = "attnvision"
# what config.json must hold, and of which type
_FIELDS = {"architecture": str, "model_kwargs": dict, "num_classes": int, "in_chans": int, "pretrained_cfg": dict}
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_hub_spec(value) -> bool:
    """Whether ``value`` is an ``hf-hub:`` name."""
    return isinstance(value, str) and value.startswith(HUB_PREFIX)


def parse_hub_spec(spec: str, who: str) -> tuple[str, str | None]:
    """``(repo_id, revision)`` of ``hf-hub:ORG/NAME[@REVISION]``."""
    repo, _, revision = spec[len(HUB_PREFIX):].partition("@")
    if not _REPO.match(repo) or (revision == "" and "@" in spec):
        raise ValueError(f"{who}: {spec!r} is not a Hub model name; expected 'hf-hub:ORG/NAME' "
                         f"(optionally '@REVISION')")
    return repo, revision or None


def hub_file(spec: str, filename: str, who: str) -> str:
    """The local path of ``filename`` of the repository ``spec`` names, from the Hub cache or downloaded."""
    repo, revision = parse_hub_spec(spec, who)
    return fetch_weights({"hf_hub_id": repo, "hf_hub_filename": filename, "hf_hub_revision": revision}, who=who,
                         progress=False)


def describe_config(config) -> str:
    """What a ``config.json`` that is not ours holds, in a few words."""
    if not isinstance(config, dict):
        return f"its config.json holds a {type(config).__name__}, not an object"
    if "model_type" in config or "architectures" in config:
        return (f"its config.json is a transformers config (model_type {config.get('model_type')!r}, "
                f"architectures {config.get('architectures')!r})")
    if "architecture" in config and config.get("library_name") in (None, "timm"):
        return f"its config.json is timm's (architecture {config['architecture']!r}): load it with timm.create_model"
    return f"its config.json has no library_name {LIBRARY!r} (keys: {', '.join(sorted(config)[:8])})"


def is_own_config(config) -> bool:
    return isinstance(config, dict) and config.get("library_name") == LIBRARY


def read_model_config(path: str, where: str, who: str) -> dict:
    """The ``config.json`` at ``path`` (of the repository or folder ``where``), checked to be ours."""
    config = read_json(path, who)
    if not is_own_config(config):
        raise ValueError(f"{who}: {where} is not an attnvision model repository: {describe_config(config)}")
    check_model_config(config, where, who)
    return config


def check_model_config(config: dict, where: str, who: str) -> None:
    wrong = [f"{k} (expected {t.__name__}, got {type(config.get(k)).__name__})" for k, t in _FIELDS.items()
             if not isinstance(config.get(k), t) or isinstance(config.get(k), bool)]
    if wrong:
        raise ValueError(f"{who}: the config.json of {where} is damaged: {', '.join(wrong)}")


def model_record(config: dict) -> dict:
    """The model record (the fields of a run record that rebuild the model) that ``config`` describes."""
    record = dict(model=config["architecture"], model_kwargs=dict(config["model_kwargs"]),
                  attach=config.get("attach"), attach_init=config.get("attach_init") or "identity",
                  num_classes=config["num_classes"], in_chans=config["in_chans"],
                  pretrained_cfg=tuple_values(config["pretrained_cfg"]))
    for key in ("task", "backbone"):
        if key in config:
            record[key] = config[key]
    return record


def tuple_values(cfg: dict) -> dict:
    """``pretrained_cfg`` read from JSON: its lists (sizes, mean, std) as the tuples a model holds."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}


def read_hub_model(spec: str, who: str) -> tuple[dict, str]:
    """``(config, weights path)`` of the repository ``hf-hub:ORG/NAME`` in our format."""
    config = read_model_config(hub_file(spec, CONFIG_FILE, who), spec, who)
    return config, hub_file(spec, WEIGHTS_FILE, who)


def read_folder_model(folder: str, who: str) -> tuple[dict, str]:
    """``(config, weights path)`` of a folder written by ``save_pretrained``."""
    config = read_model_config(os.path.join(folder, CONFIG_FILE), repr(folder), who)
    weights = os.path.join(folder, WEIGHTS_FILE)
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{who}: the folder {folder!r} holds a config.json but no {WEIGHTS_FILE}")
    return config, weights
