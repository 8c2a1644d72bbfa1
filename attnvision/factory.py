"""``create_model`` and ``list_models`` (timm conventions) over the registered model families.

Builders are plain functions ``builder(*, num_classes, in_chans, **kwargs) -> nn.Module`` registered
by name (:func:`attnvision.registry.register_model`); importing this module imports every family, which
registers its builders and its table of published weights (:mod:`attnvision.weights.pretrained`).
``create_model`` also accepts ``torchvision:NAME`` and ``timm:NAME`` when those packages are installed,
and ``hf-hub:ORG/NAME``, a repository written by ``save_pretrained``. ``pretrained`` is False, True (the
model's default published weights), a tag of them, a local file, or ``hf-hub:ORG/NAME`` (that
repository's weights); a name may carry the tag as timm's do: ``"resnet50.tv_in1k"``.
"""
from __future__ import annotations

import fnmatch
import os
import warnings
from collections.abc import Mapping

import torch
from torch import nn

from . import models  # noqa: F401  (importing the families registers them)
from ._suggest import did_you_mean, unknown_name_error
from .models._base import make_cfg, model_cfg
from .models._features import FeatureListNet
from .registry import MODELS
from .weights import load_checkpoint, read_state_dict
from .weights.download import fetch_weights
from .weights.hub import is_hub_spec, model_record, parse_hub_spec, read_hub_model
from .weights.pretrained import WeightsCfg, adapt_input_conv, get_weights, is_tag, split_tag, weights_of

_EXTERNAL = ("torchvision:", "timm:")


def is_model(name: str) -> bool:
    return name in MODELS


def _expand_pattern(pattern: str) -> list[str]:
    """A pattern without a tag part also matches the tagged names (``resnet50`` -> ``resnet50.*``), as timm's."""
    return [pattern] if "." in pattern else [pattern, pattern + ".*"]


def list_models(pattern="*", exclude_filters=(), pretrained: bool = False,
                include_tags: bool | None = None) -> list[str]:
    """Sorted names of the registered models matching the fnmatch ``pattern`` (or any of a list of
    patterns) and none of ``exclude_filters`` (timm's signature).

    ``pretrained=True`` keeps the models whose published weights can be downloaded (``create_model(name,
    pretrained=True)``); weights that must be downloaded by hand (Google Drive) are not listed here but in
    ``attnvision models --pretrained``. ``include_tags`` (default: ``pretrained``) lists ``model.tag``
    names, one per set of weights, as timm does (patterns then match the tags too).
    """
    patterns = list(pattern) if isinstance(pattern, (list, tuple, set)) else [pattern]
    excludes = list(exclude_filters) if isinstance(exclude_filters, (list, tuple, set)) else [exclude_filters or ""]
    for p in patterns + excludes:
        if not isinstance(p, str):
            raise TypeError(f"list_models: patterns must be strings, got {p!r}")
    if include_tags is None:
        include_tags = pretrained
    if include_tags:
        names = []
        for name in MODELS.names():
            tags = [w.tag for w in weights_of(name) if w.fetchable or not pretrained]
            names += [f"{name}.{t}" for t in tags] or ([] if pretrained else [name])
        patterns = [e for p in patterns for e in _expand_pattern(p)]
        excludes = [e for p in excludes if p for e in _expand_pattern(p)]
    else:
        names = [n for n in MODELS.names() if not pretrained or any(w.fetchable for w in weights_of(n))]
    found = {n for p in patterns for n in fnmatch.filter(names, p)}
    found -= {n for p in excludes for n in fnmatch.filter(found, p)}
    return sorted(found)


def _create_external(name: str, num_classes: int, in_chans: int, **kwargs) -> nn.Module:
    lib, _, arch = name.partition(":")
    if lib == "torchvision":
        try:
            import torchvision.models as tvm
        except ImportError as e:
            raise ImportError(f"create_model: {name!r} needs torchvision installed") from e
        if arch not in tvm.list_models():
            raise unknown_name_error("create_model (torchvision)", arch, tvm.list_models())
        model = tvm.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
        if in_chans != 3:
            _fit_first_conv(model, in_chans, name)
        model.pretrained_cfg = _torchvision_cfg(tvm, arch)
        return model
    try:
        import timm
    except ImportError as e:
        raise ImportError(f"create_model: {name!r} needs timm installed (pip install timm)") from e
    if arch not in timm.list_models():
        raise unknown_name_error("create_model (timm)", arch, timm.list_models())
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _fit_first_conv(model: nn.Module, in_chans: int, name: str) -> None:
    """torchvision builds RGB networks only: the first convolution (the one reading 3 channels, first in
    module order) is replaced by one reading ``in_chans``, its kernels summed over RGB for one channel or
    repeated and scaled by 3/``in_chans`` otherwise (timm's rule, :func:`adapt_input_conv`)."""
    for parent in model.modules():
        for child_name, conv in parent.named_children():
            if isinstance(conv, nn.Conv2d) and conv.in_channels == 3 and conv.groups == 1:
                sizes = conv.kernel_size, conv.stride, conv.padding, conv.dilation
                new = nn.Conv2d(in_chans, conv.out_channels, *sizes,  # type: ignore[arg-type]  # torch: tuple[int, ...]
                                groups=1, bias=conv.bias is not None, padding_mode=conv.padding_mode)
                with torch.no_grad():
                    new.weight.copy_(adapt_input_conv(conv.weight, in_chans))
                    if conv.bias is not None and new.bias is not None:
                        new.bias.copy_(conv.bias)
                setattr(parent, child_name, new)
                return
    raise ValueError(f"create_model: {name!r} has no convolution reading 3 channels to fit to in_chans={in_chans}")


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


def _warn_report(report, model: nn.Module, path, fresh: bool) -> None:
    notes = []
    if report.dropped_keys:
        kept = getattr(model, "num_classes", None)
        notes.append(f"dropped the checkpoint's classifier ({', '.join(report.dropped_keys)}): the model has none"
                     if kept == 0 else f"dropped the classifier of another shape ({', '.join(report.dropped_keys)}), "
                     f"initialised for num_classes={kept}")
    if fresh and report.fresh_keys:
        notes.append(f"the checkpoint has no attention weights: {len(report.fresh_keys)} attention tensors keep "
                     f"their initialisation ({', '.join(report.fresh_keys[:4])}"
                     f"{', …' if len(report.fresh_keys) > 4 else ''})")
    if notes:
        warnings.warn(f"create_model: loaded {os.fspath(path)!r} into {type(model).__name__}; " + "; ".join(notes),
                      stacklevel=4)


def _load_pretrained(model: nn.Module, path) -> None:
    report = load_checkpoint(model, path, source="auto", drop_mismatched_head=True, fresh_attention=True)
    _warn_report(report, model, path, fresh=True)


# -- published weights ------------------------------------------------------------------------

def _resolve_pretrained(name: str, pretrained) -> tuple[str, WeightsCfg | None, str | None]:
    """(registered name, the published weights asked for or None, a local file to load or None)."""
    arch, tag = split_tag(name)
    MODELS.get(arch, "create_model")  # an unknown name fails here, with the closest names
    weights = get_weights(arch, tag) if tag is not None else None
    if not pretrained:
        return arch, weights, None
    if pretrained is True:
        return arch, weights or get_weights(arch), None
    tags = [w.tag for w in weights_of(arch)]
    if isinstance(pretrained, str) and is_tag(arch, pretrained):
        if os.path.exists(pretrained):
            raise ValueError(f"create_model: pretrained={pretrained!r} is both a tag of {arch}'s published weights "
                             f"and a file here; pass './{pretrained}' for the file, or name the weights "
                             f"{arch}.{pretrained!s} with pretrained=True")
        if weights is not None and weights.tag != pretrained:
            raise ValueError(f"create_model: {name!r} names the {weights.tag} weights but pretrained={pretrained!r} "
                             f"names other ones; give the tag once")
        return arch, get_weights(arch, pretrained), None
    if isinstance(pretrained, (str, os.PathLike)):
        path = os.fspath(pretrained)
        if tags and not os.path.exists(path):
            raise FileNotFoundError(f"create_model: pretrained={path!r} is neither a file nor a tag of {arch}'s "
                                    f"published weights ({', '.join(tags)}){did_you_mean(path, tags)}")
        return arch, weights, path
    raise TypeError(f"create_model: pretrained must be False, True, a tag of the model's published weights or a "
                    f"local path, got {pretrained!r}")


def _with_weights_kwargs(arch: str, weights: WeightsCfg, kwargs: dict) -> dict:
    """``kwargs`` with the builder arguments ``weights`` need; a contradicting argument is an error."""
    out = dict(kwargs)
    for key, need in weights.model_kwargs.items():
        given = out.get(key)
        if key not in out or given is None:
            out[key] = dict(need) if isinstance(need, Mapping) else need
        elif isinstance(need, Mapping) and isinstance(given, Mapping):
            clash = [k for k in need if k in given and given[k] != need[k]]
            if clash:
                raise ValueError(f"create_model: the {weights.tag} weights of {arch} need {key}="
                                 f"{dict(need)!r}, got {key}={dict(given)!r}")
            out[key] = {**given, **need}
        elif given != need:
            raise ValueError(f"create_model: the {weights.tag} weights of {arch} need {key}={need!r} (the layout "
                             f"they were trained in), got {key}={given!r}")
    return out


def _fetch(arch: str, weights: WeightsCfg) -> str:
    if not weights.fetchable:
        raise ValueError(f"create_model: the {weights.tag} weights of {arch} are published only at {weights.page}, "
                         f"which cannot be downloaded automatically: download the file there and pass "
                         f"create_model('{arch}.{weights.tag}', pretrained=PATH) (which also applies their layout "
                         f"and preprocessing)")
    try:
        return fetch_weights(weights.fetch_cfg(), who="create_model")
    except (OSError, ImportError) as e:  # the offline route: a file downloaded by hand, loaded as these weights
        if "pretrained=PATH" not in str(e):
            raise
        offline_route = f"create_model('{arch}.{weights.tag}', pretrained=PATH)"
        raise type(e)(str(e).replace("pretrained=PATH", offline_route)) from None


def _check_layout(model: nn.Module, sd: dict) -> None:
    """Name the keys that differ when a file is in another layout (before shapes are compared)."""
    own = model.state_dict()
    head = getattr(model, "classifier_path", None)
    keep = (lambda k: not k.startswith(head + ".")) if head else (lambda k: True)
    extra = [k for k in sd if k not in own and keep(k)]
    missing = [k for k in own if k not in sd and keep(k)]
    if extra or missing:
        def some(keys):  # the weights, not the BN step counters, sorted: what names a layout
            keys = sorted(k for k in keys if not k.endswith("num_batches_tracked")) or sorted(keys)
            return ", ".join(keys[:5]) + (", …" if len(keys) > 5 else "")
        raise ValueError(f"the file holds {len(sd)} tensors in another layout: {len(extra)} keys the model has not "
                         f"({some(extra) or 'none'}), {len(missing)} of its keys missing ({some(missing) or 'none'})")


def _load_published(model: nn.Module, arch: str, weights: WeightsCfg, path: str, in_chans: int) -> None:
    """Load the file of ``weights`` (converted from its layout; the first convolution fitted to ``in_chans``)."""
    try:
        sd = read_state_dict(path, safe_globals=weights.safe_globals)
        if weights.source == "official":
            sd = getattr(model, "checkpoint_filter_fn")(sd, model)
        first = model_cfg(model).get("first_conv")
        key = f"{first}.weight" if first else None
        if in_chans != 3 and key in sd and sd[key].dim() == 4 and sd[key].shape[1] == 3:
            sd[key] = adapt_input_conv(sd[key], in_chans)
        _check_layout(model, sd)
        report = load_checkpoint(model, sd, source="attnvision", drop_mismatched_head=True)
    except ValueError as e:
        detail = str(e).removeprefix("load_checkpoint: ")
        raise ValueError(f"create_model: {path!r} does not hold the {weights.tag} weights of {arch} in their "
                         f"published layout ({weights.source}): {detail}") from None
    _warn_report(report, model, path, fresh=False)


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
    own = model_cfg(model)
    chans = own["input_size"][0]
    cfg = dict(own, **{k: v for k, v in record["pretrained_cfg"].items() if k in _PREPROCESSING})
    repo, revision = parse_hub_spec(spec, "create_model")
    own.update(fit_cfg_to_channels(cfg, chans), hf_hub_id=repo, **({"hf_hub_revision": revision} if revision else {}))
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
        pretrained: False; True: the model's default published weights (``list_models(pretrained=True)``),
            downloaded into the Hugging Face or torch.hub cache and checked against their sha256; a tag of
            them (``"tv2_in1k"``, or in the name: ``"resnet50.tv2_in1k"``); or the path of a local
            checkpoint (safetensors or torch file, in our key layout or another one ``load_checkpoint``
            converts: the authors', timm's, Hugging Face's), or a Hugging Face ``save_pretrained`` folder.
            A name with a tag and a path loads the file as those weights (their layout, builder arguments
            and preprocessing): the route for weights published where they cannot be fetched (Google
            Drive). Published weights set their builder arguments (e.g. ``stride_in_1x1=True`` for the SE
            authors' layout), their preprocessing, ``tag``, ``top1``, ``license``, ``hf_hub_id``/``url``
            and ``sha256`` in ``pretrained_cfg``; with ``in_chans != 3`` their first convolution is
            summed over RGB (one channel) or repeated and scaled by 3/``in_chans`` (timm's rule). A
            classifier of another shape (fine-tuning to ``num_classes``) is dropped and a plain
            network's checkpoint leaves the attention layers at their initialisation; both are
            reported in a warning naming the keys. ``pretrained="hf-hub:ORG/NAME"`` loads the weights of a
            repository written by ``save_pretrained`` the same way.
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
    weights = path = None
    if name.startswith(_EXTERNAL):
        if output_stride is not None:
            model_kwargs["output_stride"], output_stride = output_stride, None
        model = _create_external(name, num_classes, in_chans, **model_kwargs)
        if pretrained:
            if not isinstance(pretrained, (str, os.PathLike)) or isinstance(pretrained, bool):
                raise TypeError(f"create_model: pretrained must be False or a local path for {name} (published "
                                f"weights are for attnvision's own models), got {pretrained!r}")
            path = os.fspath(pretrained)
    else:
        name, weights, path = _resolve_pretrained(name, pretrained)
        if weights is not None:
            model_kwargs = _with_weights_kwargs(name, weights, model_kwargs)
        model = MODELS.get(name, "create_model")(num_classes=num_classes, in_chans=in_chans, **model_kwargs)
        if weights is not None:
            cfg = {**model.pretrained_cfg, **weights.pretrained_cfg(), "architecture": name}
            cfg["test_input_size"] = (in_chans, *cfg["test_input_size"][1:])
            model.pretrained_cfg = cfg
    if isinstance(getattr(model, "pretrained_cfg", None), dict):
        setattr(model, "pretrained_cfg", fit_cfg_to_channels(model_cfg(model), in_chans))
    if weights is not None and pretrained and path is None:
        path = _fetch(name, weights)
    if weights is not None and path is not None:
        _load_published(model, name, weights, path, in_chans)
    elif path is not None:
        _load_pretrained(model, path)
    if output_stride is not None:
        native = getattr(model, "feature_info")[-1]["reduction"]
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
