"""``attnvision <command>``: each command lives in its own module with ``add_parser`` and ``run``."""
from __future__ import annotations

import argparse
import errno
import importlib
import sys

from ..io import FileSystemError

# Each name is a module of this package defining ``add_parser(subparsers)`` (which sets
# ``func`` on its parser) and the function it points to.
COMMANDS = ["models", "profile", "benchmark", "train", "eval", "compare", "cam"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="attnvision", description="Attention for vision: models, profiling, "
                                     "training, comparison and explanation.")
    parser.add_argument("--version", action="version", version=f"attnvision {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".{name}", __package__).add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except (ValueError, TypeError) as e:
        print(f"attnvision {args.command}: error: {_message(e, args.command)}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only folder, a full disk, a name too long: what failed where, no traceback
        print(f"attnvision {args.command}: error: {_os_message(e, args.command)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # a second Ctrl-C: a short word, no traceback
        print(f"\nattnvision {args.command}: {_message(e, args.command) or 'interrupted'}", file=sys.stderr)
        return 130


def _message(error: BaseException, command: str) -> str:
    message = str(error)
    prefix = f"{command}: "  # the library names the command already
    return message[len(prefix):] if message.startswith(prefix) else message



def _os_message(error: OSError, command: str) -> str:
    if isinstance(error, FileSystemError) or error.errno is None:  # said in full already
        return _message(error, command)
    code = errno.errorcode.get(error.errno, str(error.errno))
    paths = " -> ".join(repr(p) for p in (error.filename, error.filename2) if p is not None)
    return f"file system error{' on ' + paths if paths else ''}: {error.strerror} ({code})"


if __name__ == "__main__":
    sys.exit(main())
