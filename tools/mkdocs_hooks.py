"""MkDocs hooks of the documentation site (``mkdocs.yml``: ``hooks:``).

The pages in ``docs/`` link the measured results in ``benchmarks/results/*.md`` with paths relative
to the repository (``../benchmarks/results/van.md``), which work when the files are read on GitHub or
in a clone. MkDocs only knows files inside ``docs/``: these hooks add the results files to the site
under ``benchmarks/results/`` and point the pages' links at them there, so that ``mkdocs build
--strict`` checks those links like any other instead of refusing them as outside the site.
"""
from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

EXTRA = "benchmarks/results"  # repository folder whose Markdown files join the site under the same path
_LINK = re.compile(r"(\]\()([^)\s#]+\.md)(#[^)\s]*)?(\))")


def _root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def on_files(files, config):
    root = _root(config)
    for path in sorted((root / EXTRA).glob("*.md")):
        files.append(File(f"{EXTRA}/{path.name}", src_dir=str(root), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files


def on_page_markdown(markdown, page, config, files):
    docs = Path(config.docs_dir).resolve().relative_to(_root(config)).as_posix()
    here = posixpath.dirname(page.file.src_uri)
    if page.file.src_uri.startswith(EXTRA + "/"):
        return markdown

    def retarget(m: re.Match) -> str:
        target = posixpath.normpath(posixpath.join(docs, here, m[2]))  # relative to the repository
        if not target.startswith(EXTRA + "/"):
            return m[0]
        return f"{m[1]}{posixpath.relpath(target, here or '.')}{m[3] or ''}{m[4]}"

    return _LINK.sub(retarget, markdown)
