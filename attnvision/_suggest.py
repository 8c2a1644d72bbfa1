"""Closest-name suggestions for unknown-name errors."""
from __future__ import annotations

import difflib


def unknown_name_error(what: str, name, known) -> ValueError:
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(known) if len(known) <= 12 else f"{len(known)} known names"
    return ValueError(f"{what}: unknown name {name!r}{hint} (known: {listing})")
