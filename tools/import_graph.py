"""How the package's modules import each other: imports of our own modules made inside functions, and the
import circles (strongly connected components), counting those hidden imports too.

    python tools/import_graph.py [PACKAGE_DIR]        # default: attnvision

To measure another version: ``git archive REV attnvision | tar -x -C /tmp/old`` and pass
``/tmp/old/attnvision``. ``.importlinter`` (checked by tests/test_house.py) states the layers themselves.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _targets(node, module: str, is_package: bool, known: dict[str, Path], package: str) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names if a.name.split(".")[0] == package]
    else:
        base = module.split(".")[: None if is_package else -1]
        if node.level:
            base = base[: len(base) - (node.level - 1)]
            name = ".".join(base + ([node.module] if node.module else []))
        else:
            name = node.module or ""
        if name.split(".")[0] != package:
            return []
        names = [f"{name}.{a.name}" if f"{name}.{a.name}" in known else name for a in node.names]
    out = []
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.append(name)
    return out


def import_graph(root: Path) -> tuple[dict[str, set[str]], list[str]]:
    """(module -> the modules it imports, ``file:line`` of each import inside a function)."""
    known, package = modules(root), root.name
    edges: dict[str, set[str]] = {m: set() for m in known}
    hidden = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        inside = {id(n) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(fn)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets = _targets(node, module, path.name == "__init__.py", known, package)
                edges[module].update(targets)
                if targets and id(node) in inside:
                    hidden.append(f"{path}:{node.lineno}")
    return edges, hidden


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10_000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def main(argv=None) -> int:
    root = Path((argv or sys.argv[1:] or ["attnvision"])[0]).resolve()
    edges, hidden = import_graph(root)
    found = circles(edges)
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports between them")
    print(f"imports of our own modules inside functions: {len(hidden)}")
    print(f"import circles: {len(found)}" + "".join(f"\n  {len(c)} modules: {', '.join(c)}" for c in found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
