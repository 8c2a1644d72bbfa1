"""``attnvision <command>``: each command lives in its own module with ``add_parser`` and ``run``."""
from __future__ import annotations

import errno
import io
import os
import re
import sys

from .._suggest import close_names, did_you_mean
from .._version import __version__
from ..io import FileSystemError
from . import benchmark, cam, compare, data, eval, export, models, profile, push, train
from ._options import Parser, UsageError

# Each is a module of this package defining ``add_parser(subparsers)`` (which sets ``func`` on its
# parser) and the function it points to; in the order of ``attnvision --help``.
_MODULES = dict(models=models, profile=profile, benchmark=benchmark, train=train, eval=eval, compare=compare, cam=cam,
                data=data, export=export, push=push)
COMMANDS = list(_MODULES)

# The exit status of a process ended by SIGPIPE in a shell (128 + 13): `attnvision models | head`.
BROKEN_PIPE = 141
_NUMBER = re.compile(r"^-\d*\.?\d+(e[-+]?\d+)?$")  # a negative value, not an option


def build_parser() -> Parser:
    parser = Parser(prog="attnvision", description="Attention for vision: models, profiling, "
                    "training, comparison and explanation.")
    parser.add_argument("--version", action="version", version=f"attnvision {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")  # their parsers are Parsers too
    for module in _MODULES.values():
        module.add_parser(sub)
    parser.commands = sub.choices
    return parser


def main(argv=None) -> int:
    try:
        code = _main(sys.argv[1:] if argv is None else list(argv))
        sys.stdout.flush()  # a reader that has gone shows here, while it can still be answered quietly
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return BROKEN_PIPE


def _main(argv: list[str]) -> int:
    parser = build_parser()
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        print(f"attnvision: error: unknown command {argv[0]!r}{did_you_mean(argv[0], COMMANDS)} (commands: "
              f"{', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    command = argv[0] if argv and argv[0] in COMMANDS else None
    target = parser.commands[command] if command else parser
    try:
        # an unknown option first: a mistyped --imag would otherwise be reported as --image missing
        unknown = _unknown_option(argv[1:] if command else argv, target)
        if unknown:
            raise UsageError(target.prog, unknown)
        args, extra = parser.parse_known_args(argv)
        if extra:
            raise UsageError(target.prog, f"unexpected argument{'s' if len(extra) > 1 else ''} {' '.join(extra)} "
                                          f"(`{target.prog} --help` says what it takes)")
    except UsageError as e:
        print(f"{e.prog}: error: {e}", file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except (ValueError, TypeError, ImportError) as e:  # ImportError: an optional library, said with its extra
        print(f"attnvision {args.command}: error: {_message(e, args.command)}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only folder, a full disk, a name too long: what failed where, no traceback
        if isinstance(e, BrokenPipeError):
            raise
        print(f"attnvision {args.command}: error: {_os_message(e, args.command)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # a second Ctrl-C: a short word, no traceback
        print(f"\nattnvision {args.command}: {_message(e, args.command) or 'interrupted'}", file=sys.stderr)
        return 130


def _unknown_option(argv: list[str], parser: Parser) -> str | None:
    """The first option of ``argv`` that ``parser`` does not take, said with the closest ones it takes."""
    known = parser.option_strings()
    for arg in argv:
        if arg == "--":
            break
        name = arg.split("=", 1)[0]
        if not name.startswith("-") or name == "-" or _NUMBER.match(name) or name in known:
            continue
        close = close_names(name, known, n=3, prefix=True)
        return f"unknown option {name}" + (f"; did you mean {' or '.join(close)}?" if close else
                                           f" (`{parser.prog} --help` lists the options)")
    return None


def _quiet_stdout() -> None:
    """The reader of stdout has gone (``| head``): send what is still buffered nowhere, so that the
    interpreter's last flush does not print a BrokenPipeError of its own."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):  # not a file (captured): nothing to flush
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


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
