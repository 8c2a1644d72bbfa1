"""What the commands' parsers share: no abbreviated options, errors in one line, JSON options that say
where they stop being JSON."""
from __future__ import annotations

import argparse
import json


class UsageError(Exception):
    """A command line argparse refuses; ``main`` says it in one line, ``PROG: error: MESSAGE``."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """``--epoch`` is not taken for ``--epochs`` (no abbreviations: a later option could make one
    ambiguous), and a refusal is a :class:`UsageError`, not the usage text and ``SystemExit``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self.commands: dict[str, Parser] = {}  # the top-level parser's, by name

    def error(self, message: str):
        raise UsageError(self.prog, message)

    def option_strings(self) -> list[str]:
        """Every option this parser takes, its sub-commands' included (``data export --split``)."""
        found = [s for action in self._actions for s in action.option_strings]
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                found += [s for sub in action.choices.values() for s in sub.option_strings()]
        return found


def json_object(text: str) -> dict:
    """argparse ``type`` of an option taking a JSON object: a mistake says where the JSON fails."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        where = f"near {text[e.pos:e.pos + 12]!r}" if e.pos < len(text) else "at the end"
        raise argparse.ArgumentTypeError(f"not valid JSON: {e.msg} at line {e.lineno}, column {e.colno} "
                                         f"(char {e.pos}), {where}, in {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"key\": 1}}', got "
                                         f"{type(value).__name__} {text!r}")
    return value
