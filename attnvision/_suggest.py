"""Closest-name suggestions for unknown-name errors."""
from __future__ import annotations

import difflib


def close_names(name, known, n: int = 5, *, prefix: bool = False) -> list[str]:
    """The names of ``known`` closest to ``name``, best first (none when nothing is close). ``prefix``:
    the names ``name`` begins, when there are any, shortest first (``--batch`` means ``--batch-size``),
    else the single closest."""
    name, known = str(name), sorted(known)
    if prefix:
        started = sorted((k for k in known if k.startswith(name)), key=len)
        if started:
            return started[:n]
        n = 1
    return difflib.get_close_matches(name, known, n=n, cutoff=0.5)


def did_you_mean(name, known) -> str:
    """``"; did you mean 'a', 'b'?"`` for the names of ``known`` close to ``name``, else ``""``."""
    close = close_names(name, known)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def unknown_name_error(what: str, name, known) -> ValueError:
    known = sorted(known)
    listing = ", ".join(known) if len(known) <= 12 else f"{len(known)} known names"
    return ValueError(f"{what}: unknown name {name!r}{did_you_mean(name, known)} (known: {listing})")
