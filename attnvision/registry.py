"""One registry type for every kind of plug-in: models, attention kinds, tasks, datasets, run metrics,
explanation methods.

Every :class:`Registry` follows the same rules: a name is registered once (registering it again is an
error unless ``override=True`` says it is meant), an unknown name is an error that suggests the closest
known ones, and ``names()`` lists them sorted. A plug-in whose module is costly to import (torchvision's
detectors) can be registered by its import path with :meth:`Registry.register_lazy`: the module is imported
the first time the name is looked up, as entry points are.

The model registry lives here too (``register_model``); ``create_model`` and ``list_models`` are in
:mod:`attnvision.factory`, which imports the model families.
"""
from __future__ import annotations

import fnmatch
import importlib
from typing import Callable, Generic, Iterator, TypeVar

from ._suggest import unknown_name_error

T = TypeVar("T")


class Registry(Generic[T]):
    """Named plug-ins of one ``kind`` (``"model"``, ``"attention kind"``, ``"task"``, ...).

    ``lower=True`` makes the names case-insensitive (stored and looked up in lower case).
    """

    def __init__(self, kind: str, *, lower: bool = False):
        self.kind = kind
        self.lower = lower
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = {}

    def _key(self, name: object, who: str) -> str:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{who}: a {self.kind} name must be a non-empty string, got {name!r}")
        return name.lower() if self.lower else name

    def register(self, name: str | None = None, obj: T | None = None, *, override: bool = False,
                 who: str | None = None):
        """Register ``obj`` under ``name`` (default: its ``__name__``); without ``obj``, a decorator."""
        who = who or f"register ({self.kind})"

        def add(item: T) -> T:
            key = self._key(name or getattr(item, "__name__", None), who)
            if not override and (key in self._items or key in self._lazy):
                raise ValueError(f"{who}: a {self.kind} named {key!r} is already registered "
                                 f"(pass override=True to replace it)")
            self._lazy.pop(key, None)
            self._items[key] = item
            return item

        return add(obj) if obj is not None else add

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``"package.module:attribute"``, imported when ``name`` is first looked up."""
        key = self._key(name, f"register ({self.kind})")
        if key in self._items or key in self._lazy:
            raise ValueError(f"register ({self.kind}): a {self.kind} named {key!r} is already registered")
        if ":" not in target:
            raise ValueError(f"register ({self.kind}): a lazy target is 'module:attribute', got {target!r}")
        self._lazy[key] = target

    def unregister(self, name: str) -> T | None:
        """Remove ``name`` (a no-op when absent); returns what was registered."""
        key = self._key(name, f"unregister ({self.kind})")
        self._lazy.pop(key, None)
        return self._items.pop(key, None)

    def get(self, name: str, who: str | None = None) -> T:
        """The plug-in named ``name``; an unknown name is a ``ValueError`` naming the closest known ones."""
        who = who or self.kind
        key = self._key(name, who)
        if key not in self._items and key in self._lazy:
            module, _, attr = self._lazy.pop(key).partition(":")
            self._items[key] = getattr(importlib.import_module(module), attr)
        if key not in self._items:
            raise unknown_name_error(who, name, self.names())
        return self._items[key]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching the fnmatch ``pattern``."""
        return sorted(fnmatch.filter([*self._items, *self._lazy], pattern))

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and (name.lower() if self.lower else name) in {*self._items, *self._lazy}

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items) + len(self._lazy)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"


MODELS: Registry[Callable] = Registry("model")


def register_model(fn: Callable | None = None, *, name: str | None = None):
    """Register a builder ``fn(*, num_classes, in_chans, **kwargs) -> nn.Module`` under ``name``
    (default: the function's name). Usable as a decorator; a name is registered once."""
    if fn is not None:
        return MODELS.register(name, fn, who="register_model")
    return MODELS.register(name, who="register_model")
