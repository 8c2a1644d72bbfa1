"""Plain-text tables for the terminal and Markdown tables for the docs."""
from __future__ import annotations


def format_table(headers, rows, markdown: bool = False) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    right = [bool(rows) and all(_numeric(r[i]) for r in rows) for i in range(len(headers))]

    def line(cells):
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)]
        return ("| " + " | ".join(parts) + " |") if markdown else "  ".join(parts).rstrip()

    out = [line([str(h) for h in headers])]
    if markdown:
        out.append("|" + "|".join(("-" * (w + 1) + ":") if r else ("-" * (w + 2)) for w, r in zip(widths, right)) + "|")
    else:
        out.append("  ".join("-" * w for w in widths))
    out += [line(r) for r in rows]
    return "\n".join(out)


def _numeric(s: str) -> bool:
    s = s.replace(",", "").replace("%", "").replace("x", "").replace("+", "").strip()
    try:
        float(s)
        return True
    except ValueError:
        return False
