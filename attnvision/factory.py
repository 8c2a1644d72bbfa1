"""``create_model`` and ``list_models`` (timm conventions) over the registered model families.

Builders are plain functions ``builder(*, num_classes, in_chans, **kwargs) -> nn.Module`` registered
by name (:func:`attnvision.registry.register_model`); importing this module imports every family, which
registers its builders. ``create_model`` also accepts ``torchvision:NAME`` and ``timm:NAME`` when those
packages are installed, and ``hf-hub:ORG/NAME``, a repository written by ``save_pretrained``.
``pretrained`` is False, a local file, or ``hf-hub:ORG/NAME`` (that repository's weights).
"""
from __future__ import annotations

import fnmatch
import os
import warnings

from torch import nn

from . import models  # noqa: F401  (importing the families registers them)
from ._suggest import unknown_name_error
from .models._base import make_cfg
from .models._features import FeatureListNet
from .registry import MODELS
from .weights import load_checkpoint
from .weights.hub import is_hub_spec, model_record, parse_hub_spec, read_hub_model

_EXTERNAL = ("torchvision:", "timm:")


def is_model(name: str) -> bool:
    return name in MODELS


def list_models(pattern="*", exclude_filters=(), pretrained: bool = False) -> list[str]:
    """Sorted names of the registered models matching the fnmatch ``pattern`` (or any of a list of
    patterns) and none of ``exclude_filters`` (timm's signature). ``pretrained=True`` lists the models
    with downloadable weights: none, as attnvision ships no weights (load local files with ``pretrained=PATH``)."""
    patterns = list(pattern) if isinstance(pattern, (list, tuple, set)) else [pattern]
    excludes = list(exclude_filters) if isinstance(exclude_filters, (list, tuple, set)) else [exclude_filters or ""]
    for p in patterns + excludes:
        if not isinstance(p, str):
            raise TypeError(f"list_models: patterns must be strings, got {p!r}")
    if pretrained:
        return []
    names = {n for p in patterns for n in fnmatch.filter(MODELS.names(), p)}
    names -= {n for p in excludes for n in fnmatch.filter(names, p)}
    return sorted(names)


def _create_external(name: str, num_classes: int, in_chans: int, **kwargs) -> nn.Module:
    lib, _, arch = name.partition(":")
    if lib == "torchvision":
        try:
            import torchvision.models as tvm
        except ImportError as e:
            raise ImportError(f"create_model: {name!r} needs torchvision installed") from e
        if in_chans != 3:
            raise ValueError(f"create_model: torchvision models take in_chans=3, got {in_chans}")
        if arch not in tvm.list_models():
            raise unknown_name_error("create_model (torchvision)", arch, tvm.list_models())
        model = tvm.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
        model.pretrained_cfg = _torchvision_cfg(tvm, arch)
        return model
    try:
        import timm
    except ImportError as e:
        raise ImportError(f"create_model: {name!r} needs timm installed (pip install timm)") from e
    if arch not in timm.list_models():
        raise unknown_name_error("create_model (timm)", arch, timm.list_models())
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _torchvision_cfg(tvm, arch: str) -> dict:
    """Preprocessing of torchvision's default weights for ``arch`` (read from its metadata, nothing downloaded)."""
    transform = tvm.get_model_weights(arch).DEFAULT.transforms()
    if not hasattr(transform, "crop_size"):  # not a classifier's preprocessing
        return make_cfg(paper=f"torchvision.models.{arch}")
    crop, resize = transform.crop_size[0], transform.resize_size[0]
    return make_cfg(paper=f"torchvision.models.{arch}", input_size=(3, crop, crop), mean=transform.mean,
                    std=transform.std, crop_pct=crop / resize)


def fit_cfg_to_channels(cfg: dict, in_chans: int) -> dict:
    """``pretrained_cfg`` for ``in_chans`` input channels: its input size, one mean/std per channel.

    For one channel the mean and std are the average of the RGB values; for other counts the
    values are cycled (the way timm spreads RGB input-conv weights over more channels).
    """
    cfg = dict(cfg)
    if "input_size" in cfg:
        cfg["input_size"] = (in_chans, *tuple(cfg["input_size"])[1:])
    for key in ("mean", "std"):
        values = tuple(cfg.get(key) or ())
        if values and len(values) != in_chans:
            cfg[key] = ((sum(values) / len(values),) if in_chans == 1
                        else tuple(values[i % len(values)] for i in range(in_chans)))
    return cfg


def _load_pretrained(model: nn.Module, path) -> None:
    report = load_checkpoint(model, path, source="auto", drop_mismatched_head=True, fresh_attention=True)
    notes = []
    if report.dropped_keys:
        kept = getattr(model, "num_classes", None)
        notes.append(f"dropped the checkpoint's classifier ({', '.join(report.dropped_keys)}): the model has none"
                     if kept == 0 else f"dropped the classifier of another shape ({', '.join(report.dropped_keys)}), "
                     f"initialised for num_classes={kept}")
    if report.fresh_keys:
        notes.append(f"the checkpoint has no attention weights: {len(report.fresh_keys)} attention tensors keep "
                     f"their initialisation ({', '.join(report.fresh_keys[:4])}"
                     f"{', …' if len(report.fresh_keys) > 4 else ''})")
    if notes:
        warnings.warn(f"create_model: loaded {os.fspath(path)!r} into {type(model).__name__}; " + "; ".join(notes),
                      stacklevel=3)


_PREPROCESSING = ("input_size", "mean", "std", "crop_pct", "interpolation")


def _create_from_hub(name: str, pretrained, num_classes, in_chans, options: dict, model_kwargs: dict) -> nn.Module:
    """``create_model("hf-hub:ORG/NAME")``: the repository's model with its weights; ``create_model(name,
    pretrained="hf-hub:ORG/NAME")``: its weights in ``name``. Classes and channels default to the repository's,
    its model kwargs are the defaults of the same architecture, and its preprocessing becomes the model's."""
    if is_hub_spec(name) and pretrained not in (False, True):
        raise ValueError(f"create_model: {name!r} brings its own weights; pretrained must be True or False, "
                         f"got {pretrained!r}")
    spec = name if is_hub_spec(name) else pretrained
    config, weights = read_hub_model(spec, "create_model")
    record = model_record(config)
    if record["attach"] or "task" in record:
        what = (f"{record['model']} with {record['attach']!r} attention attached" if record["attach"]
                else f"a {record['task']} model")
        raise ValueError(f"create_model: {spec} holds {what}, which only the run's record rebuilds: "
                         f"use attnvision.load_model({spec!r})")
    arch = record["model"] if is_hub_spec(name) else name
    kwargs = {**record["model_kwargs"], **model_kwargs} if arch == record["model"] else model_kwargs
    model = create_model(arch, num_classes=record["num_classes"] if num_classes is None else num_classes,
                         in_chans=record["in_chans"] if in_chans is None else in_chans, pretrained=weights,
                         **options, **kwargs)
    chans = model.pretrained_cfg["input_size"][0]
    cfg = dict(model.pretrained_cfg, **{k: v for k, v in record["pretrained_cfg"].items() if k in _PREPROCESSING})
    repo, revision = parse_hub_spec(spec, "create_model")
    model.pretrained_cfg.update(fit_cfg_to_channels(cfg, chans), hf_hub_id=repo,
                                **({"hf_hub_revision": revision} if revision else {}))
    return model


def create_model(name: str, *, num_classes: int | None = None, in_chans: int | None = None, pretrained=False,
                 features_only: bool = False, out_indices=None, feature_cls: str | None = None,
                 feature_cfg: dict | None = None, output_stride: int | None = None, **model_kwargs) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`, or ``torchvision:NAME`` / ``timm:NAME``, or
            ``hf-hub:ORG/NAME`` (``@REVISION`` optional): the model of a repository written by
            :func:`~attnvision.save_pretrained`, always with its weights (``pretrained`` True or False;
            the repository's ``config.json`` names the architecture to build without them; docs/hub.md).
        num_classes: classifier outputs (0 for no classifier; default 1000, or the repository's for
            ``hf-hub:``).
        in_chans: input image channels (default 3, or the repository's for ``hf-hub:``).
        pretrained: False, or the path of a local checkpoint (safetensors or torch file, in our
            key layout or another one ``load_checkpoint`` converts: the authors', timm's, Hugging
            Face's), or a Hugging Face ``save_pretrained`` folder. A classifier of another shape
            (fine-tuning to ``num_classes``) is dropped and a plain network's checkpoint leaves the
            attention layers at their initialisation; both are reported in a warning naming the keys.
            ``pretrained="hf-hub:ORG/NAME"`` loads the weights of such a repository the same way.
        features_only: return a feature extractor whose forward gives one map per stage.
        out_indices: which stages ``features_only`` returns (default: all; an int n: the last n).
        feature_cls, feature_cfg: timm's feature-extractor options; ``"list"`` / ``"getter"`` (both give
            the list of maps) and ``feature_cfg=dict(out_indices=..., feature_cls=...)``.
        output_stride: the network's total stride; only the native one (no family here dilates).
        **model_kwargs: passed to the family's builder (see API.md).

    Every model gets a ``pretrained_cfg`` (input size, mean, std, crop_pct; torchvision models
    get their default weights' preprocessing) whose ``input_size`` and mean/std have
    ``in_chans`` channels.
    """
    if not isinstance(name, str):
        raise TypeError(f"create_model: name must be a string, got {type(name).__name__}")
    if is_hub_spec(name) or is_hub_spec(pretrained):
        options = dict(features_only=features_only, out_indices=out_indices, feature_cls=feature_cls,
                       feature_cfg=feature_cfg, output_stride=output_stride)
        return _create_from_hub(name, pretrained, num_classes, in_chans, options, model_kwargs)
    num_classes = 1000 if num_classes is None else num_classes
    in_chans = 3 if in_chans is None else in_chans
    if name.startswith(_EXTERNAL):
        if output_stride is not None:
            model_kwargs["output_stride"], output_stride = output_stride, None
        model = _create_external(name, num_classes, in_chans, **model_kwargs)
    else:
        model = MODELS.get(name, "create_model")(num_classes=num_classes, in_chans=in_chans, **model_kwargs)
    if isinstance(getattr(model, "pretrained_cfg", None), dict):
        model.pretrained_cfg = fit_cfg_to_channels(model.pretrained_cfg, in_chans)
    if pretrained:
        if not isinstance(pretrained, (str, os.PathLike)):
            raise TypeError(f"create_model: pretrained must be False or a local path, got {pretrained!r}")
        _load_pretrained(model, pretrained)
    if output_stride is not None:
        native = model.feature_info[-1]["reduction"]
        if output_stride != native:
            raise ValueError(f"create_model: {name} has no dilated variant; output_stride must be its native "
                             f"{native}, got {output_stride!r}")
    cfg = dict(feature_cfg or {})
    unknown = set(cfg) - {"out_indices", "feature_cls"}
    if unknown:
        raise ValueError(f"create_model: feature_cfg takes out_indices and feature_cls, got {sorted(unknown)}")
    out_indices = cfg.get("out_indices", out_indices)
    feature_cls = cfg.get("feature_cls", feature_cls)
    if feature_cls not in (None, "list", "getter"):
        raise ValueError(f"create_model: feature_cls must be 'list' or 'getter', got {feature_cls!r}")
    if features_only:
        model = FeatureListNet(model, out_indices)
    elif out_indices is not None or feature_cls is not None:
        raise ValueError("create_model: out_indices and feature_cls are only used with features_only=True")
    return model
