"""Command-line options generated from :class:`~attnvision.train.TrainConfig`'s fields.

Each field becomes ``--field-name`` with its type, choices, metavar and help from the field itself
(a boolean that defaults to True becomes ``--no-field-name``), so every field is reachable and the
flags never drift from the dataclass. Options are added with ``default=SUPPRESS``: what the parsed
arguments hold is exactly what was given, which ``--resume`` and ``--config`` need to tell apart
from stored or file values.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Iterable

from ..train.config import TrainConfig, field_types, unwrap_optional
from ._options import json_object


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_note(value) -> str:
    if value in (None, False, (), {}) or value == "":
        return ""
    return f" (default {value})"


def add_config_options(parser: argparse.ArgumentParser, *, exclude: Iterable[str] = (),
                       choices: dict[str, list] | None = None, show_defaults: bool = True) -> list[str]:
    """Add one option per :class:`TrainConfig` field not in ``exclude`` (nor marked ``cli=False``);
    ``choices`` overrides a field's choices (e.g. the registered tasks); ``show_defaults=False`` leaves
    TrainConfig's defaults out of the help (a command with a recipe of its own). Returns the fields added."""
    exclude, choices = set(exclude), choices or {}
    types = field_types()
    added = []
    for name, f in TrainConfig.__dataclass_fields__.items():
        if name in exclude or not f.metadata.get("cli", True):
            continue
        meta = f.metadata
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        kind, _ = unwrap_optional(types[name])
        help_text = meta.get("help", "") + (_default_note(default) if show_defaults else "")
        kw: dict = dict(dest=name, default=argparse.SUPPRESS, help=help_text)
        options = choices.get(name, meta.get("choices"))
        if callable(options):
            options = options()
        if kind is bool:
            if default is True:
                parser.add_argument(_flag("no_" + name), action="store_false", **kw)
            else:
                parser.add_argument(_flag(name), action="store_true", **kw)
            added.append(name)
            continue
        origin = typing.get_origin(kind)
        if origin is tuple:
            args = typing.get_args(kind)
            kw["type"] = args[0]
            kw["nargs"] = "+" if len(args) == 2 and args[1] is Ellipsis else len(args)
        elif kind is dict:
            kw["type"] = json_object
        else:
            kw["type"] = kind
        if options:
            kw["choices"] = options
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        parser.add_argument(_flag(name), **kw)
        added.append(name)
    return added
