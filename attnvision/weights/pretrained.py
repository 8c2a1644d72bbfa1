"""Published weights: one :class:`WeightsCfg` per (model, tag), timm's ``pretrained_cfg`` role.

Each model family keeps a table beside its builders (``PRETRAINED = {"resnet50": [WeightsCfg(...), ...]}``)
and registers it with :func:`register_weights`. An entry says where the file lives (``hf_hub_id`` +
``hf_hub_filename`` and/or ``url``, read by :func:`attnvision.weights.download.fetch_weights`; or only a
``page`` where a person downloads it, e.g. Google Drive), its checksums where they are known, the key
layout it is in (``source`` for :func:`~attnvision.weights.load_checkpoint`) and the model arguments the
file needs, the publisher's top-1 on ImageNet-1k, the preprocessing it was evaluated with, its licence and
the evidence for each value. The first entry of a model is its default tag; names follow timm
(``"resnet50.tv_in1k"``).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from .._suggest import unknown_name_error
from ..registry import MODELS, Registry

SOURCES = ("attnvision", "official")
_TAG = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True)
class WeightsCfg:
    """Where one set of published weights lives and how it was made and evaluated.

    Args:
        tag: the name after the dot (``"tv_in1k"``): publisher, recipe and data, as timm names them.
        top1: the publisher's ImageNet-1k top-1 (%) at ``input_size`` / ``crop_pct`` (None if not given).
        license: the licence the publisher states.
        evidence: where each value was read (files at commits, pages).
        mean, std, crop_pct, interpolation, input_size: the preprocessing the weights were evaluated with.
        hf_hub_id, hf_hub_filename, url: where :func:`~attnvision.weights.download.fetch_weights` gets the file.
        page: where a person downloads it when it cannot be fetched (no ``hf_hub_id`` nor ``url``).
        sha256: of the Hub file (or of the URL's file when there is no Hub id); ``url_sha256``: of the URL's
            file (a prefix of at least 8 hex digits, as torch.hub's file names, is enough).
        source: the file's key layout, ``"attnvision"`` (ours, torchvision's) or ``"official"`` (converted by
            the family's ``checkpoint_filter_fn``).
        model_kwargs: builder arguments the weights need (the layout they were trained in).
        safe_globals: classes besides tensors the file may hold, from :data:`attnvision.weights.files.SAFE_GLOBALS`
            only (plain records such as ``argparse.Namespace``; nothing that could run code).
        top1_paper: the paper's top-1 where it differs from the publisher's (None when not read).
        test_input_size, test_crop_pct: the publisher's larger test-time size, when it names one.
        notes: what else a user should know.
    """

    tag: str
    top1: float | None
    license: str
    evidence: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    interpolation: str
    input_size: tuple[int, int, int] = (3, 224, 224)
    hf_hub_id: str | None = None
    hf_hub_filename: str | None = None
    url: str | None = None
    page: str | None = None
    sha256: str | None = None
    url_sha256: str | None = None
    source: str = "attnvision"
    model_kwargs: Mapping = field(default_factory=dict)
    safe_globals: tuple[str, ...] = ()
    top1_paper: float | None = None
    test_input_size: tuple[int, int, int] | None = None
    test_crop_pct: float | None = None
    num_classes: int = 1000
    notes: str = ""

    def __post_init__(self):
        who = f"WeightsCfg {self.tag!r}"
        if not isinstance(self.tag, str) or not _TAG.match(self.tag):
            raise ValueError(f"WeightsCfg: tag must be lower-case letters, digits and '_', got {self.tag!r}")
        if not (self.hf_hub_id or self.url or self.page):
            raise ValueError(f"{who}: give hf_hub_id, url or (for a manual download) page")
        if self.source not in SOURCES:
            raise ValueError(f"{who}: source must be one of {SOURCES}, got {self.source!r}")
        if not self.evidence:
            raise ValueError(f"{who}: evidence must name where the values were read")
        for name in ("mean", "std", "input_size", "evidence", "safe_globals"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.test_input_size is not None:
            object.__setattr__(self, "test_input_size", tuple(self.test_input_size))
        object.__setattr__(self, "model_kwargs", MappingProxyType(dict(self.model_kwargs)))

    @property
    def fetchable(self) -> bool:
        """Whether ``fetch_weights`` can get the file (else it is a manual download from ``page``)."""
        return bool(self.hf_hub_id or self.url)

    @property
    def where(self) -> str:
        """Where the file lives, in one short phrase: ``hf-hub:ORG/NAME``, the URL, or the download page."""
        if self.hf_hub_id:
            return f"hf-hub:{self.hf_hub_id}" + (f"/{self.hf_hub_filename}" if self.hf_hub_filename else "")
        return self.url or f"manual download: {self.page}"

    def fetch_cfg(self) -> dict:
        """The fields :func:`~attnvision.weights.download.fetch_weights` reads."""
        keys = ("hf_hub_id", "hf_hub_filename", "url", "sha256", "url_sha256")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    def pretrained_cfg(self) -> dict:
        """The fields these weights set in a model's ``pretrained_cfg`` (timm's names)."""
        cfg = dict(tag=self.tag, input_size=self.input_size, mean=self.mean, std=self.std, crop_pct=self.crop_pct,
                   interpolation=self.interpolation, num_classes=self.num_classes, top1=self.top1,
                   top1_paper=self.top1_paper, license=self.license, hf_hub_id=self.hf_hub_id,
                   hf_hub_filename=self.hf_hub_filename, url=self.url, sha256=self.sha256, url_sha256=self.url_sha256,
                   origin_url=self.page, source=self.source, evidence=self.evidence)
        if self.test_input_size is not None:
            cfg["test_input_size"] = self.test_input_size
        if self.test_crop_pct is not None:
            cfg["test_crop_pct"] = self.test_crop_pct
        return cfg


PRETRAINED: Registry[tuple[WeightsCfg, ...]] = Registry("model with published weights")


def register_weights(table: Mapping[str, Iterable[WeightsCfg]]) -> None:
    """Register a family's table ``{model name: [WeightsCfg, ...]}`` (first entry: the default tag)."""
    for name, entries in table.items():
        entries = tuple(entries)
        if name not in MODELS:
            raise ValueError(f"register_weights: {name!r} is not a registered model")
        if not entries or not all(isinstance(e, WeightsCfg) for e in entries):
            raise TypeError(f"register_weights: {name!r} needs a non-empty list of WeightsCfg")
        tags = [e.tag for e in entries]
        if len(set(tags)) != len(tags):
            raise ValueError(f"register_weights: {name!r} lists a tag twice: {tags}")
        PRETRAINED.register(name, entries, who="register_weights")


def split_tag(name: str) -> tuple[str, str | None]:
    """``"resnet50.tv_in1k"`` -> ``("resnet50", "tv_in1k")``; a name without a tag gives ``None``."""
    model, dot, tag = name.partition(".")
    return model, (tag if dot else None)


def weights_of(model: str) -> tuple[WeightsCfg, ...]:
    """The published weights of ``model`` (default first); ``()`` when there are none."""
    return PRETRAINED.get(model) if model in PRETRAINED else ()


def is_tag(model: str, tag) -> bool:
    return isinstance(tag, str) and any(w.tag == tag for w in weights_of(model))


def get_weights(model: str, tag: str | None = None, who: str = "create_model") -> WeightsCfg:
    """The weights ``model.tag`` (``tag=None``: the default); a clear error when there are none."""
    entries = weights_of(model)
    if not entries:
        raise ValueError(f"{who}: {model!r} has no published weights (list_models(pretrained=True) lists the "
                         f"models that have them); pass pretrained=PATH for a local file")
    if tag is None:
        return entries[0]
    for entry in entries:
        if entry.tag == tag:
            return entry
    raise unknown_name_error(f"{who} (weights of {model})", tag, [e.tag for e in entries])


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A first convolution trained on RGB for ``in_chans`` input channels (timm's rule).

    One channel: the sum over RGB, so a grey image gives what the RGB network gives on that image
    repeated three times. Other counts: the RGB kernels repeated over the channels and scaled by
    3 / ``in_chans``, which keeps the response to an input of equal channels.
    """
    rgb = weight.shape[1]
    if in_chans == rgb:
        return weight
    dtype, w = weight.dtype, weight.float()
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        w = w.repeat(1, math.ceil(in_chans / rgb), 1, 1)[:, :in_chans] * (rgb / in_chans)
    return w.to(dtype)
