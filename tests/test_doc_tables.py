"""Generating the README tables shows its progress on stderr."""
from __future__ import annotations

from tools.doc_tables import DOC_TABLES, render


def test_render_reports_progress_per_table_on_stderr(capsys):
    text = "intro\n<!-- BEGIN table:lka_cost -->\n<!-- END table:lka_cost -->\n"
    new = render(text, progress=True)
    captured = capsys.readouterr()
    assert DOC_TABLES["lka_cost"]() in new
    assert "README tables" in captured.err and "1/1" in captured.err and "lka_cost" in captured.err
    assert captured.out == ""
