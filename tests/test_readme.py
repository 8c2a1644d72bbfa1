"""The tables of the README and docs/ are the ones the code generates today."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import attnvision as av
from tools.doc_tables import DOC_TABLES

README = Path(__file__).resolve().parents[1] / "README.md"
PAGES = [README, *sorted((README.parent / "docs").glob("*.md"))]


@pytest.mark.parametrize("name", sorted(DOC_TABLES))
def test_readme_table_is_fresh(name):
    pages = [(p, re.search(rf"<!-- BEGIN table:{name} -->\n(.*?)\n?<!-- END table:{name} -->", p.read_text("utf-8"), re.S))
             for p in PAGES]
    found = [(p, m) for p, m in pages if m]
    assert found, f"no page holds the table {name}"
    for page, m in found:
        assert m[1] == DOC_TABLES[name](), (
            f"{page.name}: table {name} is stale: python tools/doc_tables.py --write {page.relative_to(README.parent)}")


def test_ci_runs_the_readme_test_command_on_a_lone_copy():
    readme_command = re.search(r'pip install -e "\.\[test\]" && (python -m pytest[^\n]*)', README.read_text("utf-8"))[1]
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert readme_command.replace("python ", "python3 ") in ci.splitlines()
    assert "mktemp -d" in ci and 'cd "$alone/attnvision"' in ci  # the suite runs where nothing is beside it


def test_readme_states_the_number_of_models_the_contract_tests_cover():
    models = README.parent / "docs" / "models.md"
    assert f"on all {len(av.list_models())} registered models" in models.read_text(encoding="utf-8")
