"""The README's tables are the ones the code generates today."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import attnvision as av
from tools.doc_tables import DOC_TABLES

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("name", sorted(DOC_TABLES))
def test_readme_table_is_fresh(name):
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"<!-- BEGIN table:{name} -->\n(.*?)\n?<!-- END table:{name} -->", text, re.S)
    assert found, f"README lacks the table {name}"
    assert found[1] == DOC_TABLES[name](), (
        f"README table {name} is stale: python tools/doc_tables.py --write README.md")


def test_ci_runs_the_readme_test_command_on_a_lone_copy():
    readme_command = re.search(r'pip install -e "\.\[test\]" && (python -m pytest[^\n]*)', README.read_text("utf-8"))[1]
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert readme_command.replace("python ", "python3 ") in ci.splitlines()
    assert "mktemp -d" in ci and 'cd "$alone/attnvision"' in ci  # the suite runs where nothing is beside it


def test_readme_states_the_number_of_models_the_contract_tests_cover():
    assert f"on all {len(av.list_models())} registered models" in README.read_text(encoding="utf-8")
