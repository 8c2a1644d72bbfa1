"""Benchmarks measure; they never install anything."""
from __future__ import annotations

import ast
import pathlib

BENCHMARKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def test_no_benchmark_runs_pip_or_a_subprocess():
    assert BENCHMARKS
    for path in BENCHMARKS:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                    for a in n.names} | {n.module.split(".")[0] for n in ast.walk(tree)
                                         if isinstance(n, ast.ImportFrom) and n.module}
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not imported & {"subprocess", "pip"}, path.name
        assert "install" not in strings, path.name
