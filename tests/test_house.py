"""The layers of the house: no import circle, no module importing a layer above it, no import of our
own modules hidden inside a function (the usual way a circle is smuggled back in)."""
from __future__ import annotations

import ast
import os
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "attnvision"


def _function_local_imports(path: Path) -> list[str]:
    """``file:line`` of each import of an attnvision module made inside a function body."""
    found = []
    for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            own = (isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("attnvision"))
                   or isinstance(node, ast.Import) and any(a.name.split(".")[0] == "attnvision" for a in node.names))
            if own:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_function_local_import_of_our_own_modules():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _function_local_imports(path)]
    assert found == [], f"imports of attnvision modules inside functions (import at the top, from a lower layer): {found}"


def test_the_import_linter_contract_of_the_layers_is_kept(tmp_path):
    cwd = os.getcwd()
    os.chdir(ROOT)  # the contract (.importlinter) names the package as imported from the repository
    try:
        code = lint_imports(config_filename=str(ROOT / ".importlinter"), cache_dir=str(tmp_path), no_logo=True)
    finally:
        os.chdir(cwd)
    assert code == 0, "lint-imports: a module imports a layer above its own (see the report above)"
