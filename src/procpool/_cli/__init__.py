"""The ``procpool`` command: the seed's applications as tools for the shell.

``procpool map`` calls a function on each item of a list or a stream, ``procpool grep``
searches a tree of files, ``procpool blur`` blurs images; each in a pool of worker processes.
Only the command imports this package, so the library pays nothing for it.

Each subcommand is a module with a :class:`Command` named ``COMMAND``, listed in
:data:`COMMANDS`; adding one is adding an entry there.
Exit statuses: 0 success, 1 some items failed (``grep``: nothing matched), 2 usage error
(``grep``: an error), 130 interrupted by Ctrl-C, 141 the output's reader went away.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from ._common import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE, Command, UsageError

__all__ = ["COMMANDS", "main"]

# The subcommands, in the order `procpool --help` lists them: name -> (summary, the module
# whose COMMAND runs it). Only the module of the command being run is imported, so one
# command never pays for another's imports.
COMMANDS: dict[str, tuple[str, str]] = {
    "map": ("call a Python function on each item, in parallel", "procpool._cli._map"),
    "grep": ("search files for a string, in parallel (like grep -r)", "procpool._cli._grep"),
    "blur": ("blur images with Pillow, in parallel", "procpool._cli._blur"),
    "bench": ("procpool against multiprocessing.Pool on this machine", "procpool._cli._bench"),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The command line's parser: a subparser per command, with its options for the command
    ``argv`` names (the others are only listed)."""
    parser = argparse.ArgumentParser(
        prog="procpool",
        description="Run work in parallel in a pool of worker processes.",
        epilog="Run `procpool COMMAND --help` for a command's options.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = argv[0] if argv else None
    for name, (summary, module) in COMMANDS.items():
        sub = subparsers.add_parser(
            name, help=summary, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        if name == chosen:
            _configure(sub, importlib.import_module(module).COMMAND)
    return parser


def _configure(parser: argparse.ArgumentParser, command: Command) -> None:
    parser.description = command.description
    parser.add_argument(
        "-j",
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="worker processes (default: the CPUs this process may use)",
    )
    command.configure(parser)
    parser.set_defaults(_command=command, _parser=parser)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        status: int = args._command.run(args)
        return status
    except UsageError as exc:
        args._parser.print_usage(sys.stderr)
        print(f"procpool {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        # The pools have been stopped by now (a `with Pool()` block terminates on its way out).
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`procpool grep ... | head`): stop quietly, as a command killed
        # by SIGPIPE does, and keep Python from complaining about the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value
