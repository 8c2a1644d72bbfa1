"""The README and the pages in docs/: their generated tables are today's, and what they state holds."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import attnvision as av
from tools.doc_tables import DOC_TABLES, default_pages, markers, stale_tables

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = default_pages(ROOT)


def _pages_marking(name: str) -> list[Path]:
    return [page for page in PAGES if name in markers(page.read_text("utf-8"), page.name)]


def test_every_table_has_one_page_and_every_marker_a_generator():
    placed = {}
    for page in PAGES:
        for name in markers(page.read_text("utf-8"), page.name):  # an unknown name raises here
            placed.setdefault(name, []).append(page.name)
    assert {n: p for n, p in placed.items() if len(p) > 1} == {}, "a table is placed on several pages"
    assert sorted(placed) == sorted(DOC_TABLES), "a generated table is on no page"


@pytest.mark.parametrize("name", sorted(DOC_TABLES))
def test_table_is_fresh(name):
    pages = _pages_marking(name)
    assert pages, f"no page holds the table {name}"
    for page in pages:
        text = page.read_text("utf-8")
        only = re.search(rf"^<!-- BEGIN table:{name} -->\n.*?^<!-- END table:{name} -->$", text, re.S | re.M)[0]
        assert stale_tables(only, where=page.name) == [], (
            f"{page.relative_to(ROOT)}: table {name} is stale: python tools/doc_tables.py --write")


def test_ci_runs_the_readme_test_command_on_a_lone_copy():
    readme_command = re.search(r'pip install -e "\.\[test\]" && (python -m pytest[^\n]*)', README.read_text("utf-8"))[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert readme_command.replace("python ", "python3 ") in ci.splitlines()
    assert "mktemp -d" in ci and 'cd "$alone/attnvision"' in ci  # the suite runs where nothing is beside it


def test_ci_builds_the_documentation_strictly_before_the_tests():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    build = next(i for i, line in enumerate(ci) if "mkdocs build --strict" in line)
    assert build < ci.index("python3 -m pytest -q -n 2")
    assert any('pip install' in line and '[test,docs]' in line for line in ci[:build])


def test_readme_is_short_and_its_map_names_registered_models():
    text = README.read_text("utf-8")
    assert len(text.splitlines()) <= 300
    map_rows = text.split("## Map: mechanism → paper → models", 1)[1].split("\n## ", 1)[0]
    names = [n for row in map_rows.splitlines()[2:] if row.startswith("|")
             for n in re.findall(r"`([a-z][\w*]*)`", row.split("|")[4])]
    assert len(names) > 20
    assert [n for n in names if not av.list_models(n)] == []


def test_pages_state_the_number_of_models_the_contract_tests_cover():
    assert f"on all {len(av.list_models())} registered models" in (ROOT / "docs" / "models.md").read_text("utf-8")
