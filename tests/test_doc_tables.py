"""The documentation tables' generator: its progress on stderr, stale tables, marker errors."""
from __future__ import annotations

import pytest

from tools.doc_tables import DOC_TABLES, main, render, stale_tables


def test_render_reports_progress_per_table_on_stderr(capsys):
    text = "intro\n<!-- BEGIN table:lka_cost -->\n<!-- END table:lka_cost -->\n"
    new = render(text, progress=True, where="page.md")
    captured = capsys.readouterr()
    assert DOC_TABLES["lka_cost"]() in new
    assert "page.md: tables" in captured.err and "1/1" in captured.err and "lka_cost" in captured.err
    assert captured.out == ""


def test_write_fills_every_page_given_and_check_then_passes(tmp_path, capsys):
    a, b = tmp_path / "a.md", tmp_path / "b.md"
    a.write_text("<!-- BEGIN table:lka_cost -->\nold\n<!-- END table:lka_cost -->\n", encoding="utf-8")
    b.write_text("no tables here\n", encoding="utf-8")
    assert main([str(a), str(b), "--check"]) == 1
    assert f"{a}: lka_cost" in capsys.readouterr().out
    assert main([str(a), str(b), "--write"]) == 0
    assert stale_tables(a.read_text("utf-8")) == [] and b.read_text("utf-8") == "no tables here\n"
    assert main([str(a), str(b), "--check"]) == 0


@pytest.mark.parametrize("text, message", [
    ("<!-- BEGIN table:nope -->\n<!-- END table:nope -->\n", "marks table 'nope', which no generator makes"),
    ("<!-- BEGIN table:lka_cost -->\n", "opens table 'lka_cost' without <!-- END table:lka_cost -->"),
])
def test_a_bad_marker_ends_the_tool_in_one_line_naming_the_page(tmp_path, capsys, text, message):
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main([str(page), "--check"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"{page} {message}" in err and len(err.strip().splitlines()) == 1
