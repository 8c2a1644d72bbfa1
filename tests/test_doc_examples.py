"""Every ```python and ```bash block of README.md and docs/*.md runs, as a reader would run it.

A Python block runs with ``exec`` in a fresh namespace, a bash block in ``bash -euo pipefail``;
each in a new empty working directory, with this repository's ``attnvision`` first on the path
(``attnvision`` and ``python`` in a bash block are this interpreter running this tree; ``$DOCTEST_ROOT`` is
the repository, for a block reading its files such as ``recipes/``). HTML
comments directly above a block steer it, and each says why:

- ``<!-- doctest: replace "OLD" "NEW" -->`` runs the block with OLD replaced by NEW (to shorten a
  long run: ``--epochs 10`` → ``--epochs 1``); OLD must occur in the block.
- ``<!-- doctest: skip REASON -->`` does not run it (no network, GPU or data set here, or a
  command that installs packages); the test is reported as skipped with REASON, never silently.

docs/pypi.md, the package's description on PyPI, is left out: its blocks install from PyPI, run
the default comparison and repeat the README's Python example (which runs here).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LEFT_OUT = {"pypi.md"}
_FENCE = re.compile(r"^```(\w+)\s*$")
_DIRECTIVE = re.compile(r"^<!-- doctest: (.*?) -->$")
_BASH_PRELUDE = """attnvision() { "$DOCTEST_PYTHON" -m attnvision "$@"; }
python() { "$DOCTEST_PYTHON" "$@"; }
"""
BASH_TIMEOUT_S = 600  # a guard against a hung command, far above what a shortened block takes
# raise it only with a reason a reviewer accepts: a skipped example is an untested one (today: installs, the
# test suite itself, data sets not here, a SLURM cluster, a second node, the Hub's and GitHub's network)
MAX_SKIPS = 12


@dataclass
class Block:
    page: str
    line: int
    lang: str
    code: str
    skip: str | None = None
    replacements: list[tuple[str, str]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _directives(lines: list[str], fence: int) -> list[str]:
    """The ``doctest:`` comments on the lines right above line index ``fence`` (blank lines between allowed)."""
    found, i = [], fence - 1
    while i >= 0 and (not lines[i].strip() or _DIRECTIVE.match(lines[i].strip())):
        if lines[i].strip():
            found.append(_DIRECTIVE.match(lines[i].strip())[1])
        i -= 1
    return found[::-1]


def _parse_directive(block: Block, text: str) -> None:
    verb, _, rest = text.partition(" ")
    if verb == "skip" and rest.strip():
        block.skip = rest.strip()
    elif verb == "replace":
        args = shlex.split(rest)
        if len(args) != 2:
            raise ValueError(f"{block.id}: doctest replace takes two quoted strings, got {rest!r}")
        block.replacements.append((args[0], args[1]))
    else:
        raise ValueError(f"{block.id}: unknown doctest directive {text!r} (expected 'skip REASON' or "
                         f"'replace \"OLD\" \"NEW\"')")


def collect(root: Path = ROOT) -> list[Block]:
    blocks = []
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        if path.name in LEFT_OUT:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            m = _FENCE.match(lines[i])
            if not m:
                i += 1
                continue
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            if m[1] in ("python", "bash"):
                block = Block(str(path.relative_to(root)), i + 1, m[1], "\n".join(lines[i + 1:end]) + "\n")
                for text in _directives(lines, i):
                    _parse_directive(block, text)
                blocks.append(block)
            i = end + 1
    return blocks


BLOCKS = collect()


def _code(block: Block) -> str:
    code = block.code
    for old, new in block.replacements:
        assert old in code, f"{block.id}: doctest replace {old!r}: not in the block"
        code = code.replace(old, new)
    return code


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_example_runs(block, tmp_path, monkeypatch):
    if block.skip:
        pytest.skip(f"{block.id}: {block.skip}")
    code = _code(block)
    monkeypatch.chdir(tmp_path)
    if block.lang == "python":
        exec(compile(code, block.id, "exec"), {"__name__": "__doctest__"})
        return
    env = {**os.environ, "DOCTEST_PYTHON": sys.executable, "DOCTEST_ROOT": str(ROOT), "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", _BASH_PRELUDE + code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=BASH_TIMEOUT_S)
    assert done.returncode == 0, (f"{block.id} failed ({done.returncode}):\n{code}\n"
                                  f"{done.stdout[-3000:]}{done.stderr[-3000:]}")


def test_the_examples_are_found_and_skips_are_few_and_explained():
    assert len(BLOCKS) >= 10
    skipped = [b for b in BLOCKS if b.skip]
    assert len(skipped) <= MAX_SKIPS, [b.id for b in skipped]
    assert all(len(b.skip.split()) >= 4 for b in skipped), "each skip says why in a few words"


def test_directives_are_parsed_and_a_stale_replace_is_an_error(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text('<!-- doctest: replace "--epochs 9" "--epochs 1" -->\n\n```bash\n'
                                        'attnvision train --epochs 9\n```\n\n<!-- doctest: skip no data set here -->\n'
                                        '```python\nprint(1)\n```\n\n```text\nnot run\n```\n', encoding="utf-8")
    run, skipped = collect(tmp_path)
    assert (run.lang, run.line, run.replacements, run.skip) == ("bash", 3, [("--epochs 9", "--epochs 1")], None)
    assert _code(run) == "attnvision train --epochs 1\n"
    assert (skipped.lang, skipped.skip) == ("python", "no data set here")
    run.replacements = [("--epochs 99", "--epochs 1")]
    with pytest.raises(AssertionError, match="not in the block"):
        _code(run)
    (tmp_path / "README.md").write_text("<!-- doctest: sikp x -->\n```bash\ntrue\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown doctest directive"):
        collect(tmp_path)
