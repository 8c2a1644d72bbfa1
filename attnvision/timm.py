"""Every attnvision model in timm's registry, as ``av_<name>``.

    import attnvision.timm  # noqa: F401  (registers the av_* names)
    import timm

    model = timm.create_model("av_resnet50_cbam", num_classes=10)
    features = timm.create_model("av_van_b0", features_only=True, out_indices=(1, 2, 3))

``import attnvision`` does not import timm (it would add 0.4 to 0.9 s to attnvision's 2.6 to 3 s on 2 CPU
cores, and fill timm's registry as a side effect): importing this module does, and registers the names
(5 to 12 ms).
Each ``av_<name>`` entry point is ``attnvision.create_model(name, ...)``: the kwargs are the family's
(``num_classes``, ``in_chans``, ``drop_rate``, ``global_pool``, ...), ``features_only`` / ``out_indices`` /
``feature_cls`` ("list" or "getter") give attnvision's feature extractor, and timm's ``device`` and
``dtype`` are honoured. ``pretrained=True`` loads the weights a ``pretrained_cfg`` / ``pretrained_cfg_overlay``
names (``file``, ``url``, ``hf_hub_id``: so ``timm.create_model("hf-hub:...")`` reads a repository timm's
``push_to_hub`` wrote for an ``av_*`` model), else attnvision's own ``pretrained=True``.

timm's registry holds each model's ``pretrained_cfg`` (input size, mean, std, crop, pool size, first
convolution, classifier, license, paper) before anything is built. Building the 134 models to read them
takes seconds, so they come from the table ``_timm_cfgs.json`` (written by ``python -m tools.timm_cfgs``
and checked against the models by tests/test_timm.py); a model registered later, or missing from the
table, is built on the meta device to read its own. :func:`register_all` registers the models
registered after this import.
"""
from __future__ import annotations

import contextlib
import json
import os

import torch
from timm.models import is_model as timm_is_model
from timm.models import register_model as timm_register_model
from timm.models._pretrained import PretrainedCfg

from .factory import create_model, list_models
from .models._base import model_cfg
from .weights.download import fetch_weights

PREFIX = "av_"
TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_timm_cfgs.json")
# our pretrained_cfg fields that timm's PretrainedCfg has under the same name; "paper" is its "paper_name"
FIELDS = ("input_size", "test_input_size", "min_input_size", "fixed_input_size", "interpolation", "crop_pct",
          "mean", "std", "num_classes", "pool_size", "first_conv", "classifier", "license")
_WEIGHTS = ("file", "url", "hf_hub_id")

# timm's register_model reads the default cfg of a model from its module's ``default_cfgs``
default_cfgs: dict[str, dict] = {}


def timm_cfg(cfg: dict) -> dict:
    """The fields of timm's ``PretrainedCfg`` that one of our ``pretrained_cfg`` gives (JSON types)."""
    out = {k: list(cfg[k]) if isinstance(cfg[k], tuple) else cfg[k] for k in FIELDS if k in cfg}
    if cfg.get("paper"):
        out["paper_name"] = cfg["paper"]
    return out


def _from_json(cfg: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}


def _read_table() -> dict:
    try:
        with open(TABLE, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):  # a broken install: every cfg is then read from its model, slowly
        return {}


def _own_cfg(name: str) -> dict:
    with torch.device("meta"):
        return timm_cfg(model_cfg(create_model(name)))


def _explicit_cfg(variant: str, pretrained_cfg, overlay) -> dict:
    """The cfg fields a caller gave (timm's ``pretrained_cfg`` dict or PretrainedCfg, and its overlay)."""
    if isinstance(pretrained_cfg, PretrainedCfg):
        pretrained_cfg = pretrained_cfg.to_dict()
    elif isinstance(pretrained_cfg, str):  # a tag: ``timm.create_model("av_NAME.TAG")``
        raise ValueError(f"timm.create_model: {variant} has no pretrained tag {pretrained_cfg!r} (attnvision models "
                         f"have one cfg, untagged)")
    return {k: v for k, v in {**(pretrained_cfg or {}), **(overlay or {})}.items() if v is not None}


def _entrypoint(name: str):
    variant = PREFIX + name

    def entry(pretrained=False, pretrained_cfg=None, pretrained_cfg_overlay=None, cache_dir=None, device=None,
              dtype=None, **kwargs):
        # timm's hf-hub and local-dir routes pass the saved model args twice: merged into kwargs and as this
        kwargs.pop("pretrained_model_args", None)
        if cache_dir is not None:
            raise ValueError(f"timm.create_model: {variant} downloads through attnvision, which takes no cache_dir; "
                             f"set HF_HUB_CACHE (the Hub) or TORCH_HOME (URLs) instead, got cache_dir={cache_dir!r}")
        given = _explicit_cfg(variant, pretrained_cfg, pretrained_cfg_overlay)
        weights = pretrained
        if pretrained and any(given.get(k) for k in _WEIGHTS):
            weights = (given["file"] if given.get("file")
                       else fetch_weights(given, who=f"timm.create_model({variant!r})"))
        with torch.device(device) if device is not None else contextlib.nullcontext():
            model = create_model(name, pretrained=weights, **kwargs)
        if dtype is not None:
            model.to(dtype=dtype)
        keep = {k: v for k, v in given.items() if k not in ("architecture", "tag", "source")}
        model_cfg(model).update(keep, architecture=variant)
        return model

    entry.__name__ = entry.__qualname__ = variant
    entry.__module__ = __name__
    entry.__doc__ = f"``attnvision.create_model({name!r}, ...)`` for timm."
    return entry


def register_all() -> list[str]:
    """Register every attnvision model not yet in timm's registry; returns the timm names registered."""
    table = _read_table()
    added = []
    for name in list_models():
        variant = PREFIX + name
        if timm_is_model(variant):
            continue
        default_cfgs[variant] = _from_json(table[name] if name in table else _own_cfg(name))
        entry = _entrypoint(name)
        globals()[variant] = entry  # a module attribute, as timm's register_model lists it in __all__
        timm_register_model(entry)
        added.append(variant)
    return added


register_all()
