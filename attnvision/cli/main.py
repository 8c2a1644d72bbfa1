"""``attnvision <command>``: each command lives in its own module with ``add_parser`` and ``run``."""
from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import benchmark, cam, compare, eval, models, profile, train

# Each is a module of this package defining ``add_parser(subparsers)`` (which sets ``func`` on its
# parser) and the function it points to; in the order of ``attnvision --help``.
COMMANDS = [models, profile, benchmark, train, eval, compare, cam]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnvision", description="Attention for vision: models, profiling, "
                                     "training, comparison and explanation.")
    parser.add_argument("--version", action="version", version=f"attnvision {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"attnvision {args.command}: error: {_message(e, args.command)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # a second Ctrl-C: a short word, no traceback
        print(f"\nattnvision {args.command}: {_message(e, args.command) or 'interrupted'}", file=sys.stderr)
        return 130


def _message(error: BaseException, command: str) -> str:
    message = str(error)
    prefix = f"{command}: "  # the library names the command already
    return message[len(prefix):] if message.startswith(prefix) else message


if __name__ == "__main__":
    sys.exit(main())
