"""The layers of the house: no import circle, no module importing a layer above it, no import of our
own modules hidden inside a function (the usual way a circle is smuggled back in)."""
from __future__ import annotations

import os
from pathlib import Path

from importlinter.cli import lint_imports

from tools.import_graph import circles, import_graph

ROOT = Path(__file__).resolve().parents[1]


def test_no_function_local_import_of_our_own_modules_and_no_import_circle():
    edges, hidden = import_graph(ROOT / "attnvision")
    assert hidden == [], f"imports of attnvision modules inside functions (import them at the top): {hidden}"
    assert circles(edges) == []


def test_the_import_linter_contract_of_the_layers_is_kept(tmp_path):
    cwd = os.getcwd()
    os.chdir(ROOT)  # the contract (.importlinter) names the package as imported from the repository
    try:
        code = lint_imports(config_filename=str(ROOT / ".importlinter"), cache_dir=str(tmp_path), no_logo=True)
    finally:
        os.chdir(cwd)
    assert code == 0, "lint-imports: a module imports a layer above its own (see the report above)"
