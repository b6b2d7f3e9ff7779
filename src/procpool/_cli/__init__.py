"""The ``procpool`` command: the seed's applications as tools for the shell.

``procpool map`` calls a function on each item of a list or a stream, ``procpool grep``
searches a tree of files, ``procpool blur`` blurs images; each in a pool of worker processes.
Only the command imports this package, so the library pays nothing for it.

Each subcommand is a :class:`Command` in :data:`COMMANDS`; adding one is adding an entry there.
Exit statuses: 0 success, 1 some items failed (``grep``: nothing matched), 2 usage error
(``grep``: an error), 130 interrupted by Ctrl-C, 141 the output's reader went away.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ._blur import BLUR
from ._common import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE, Command, UsageError
from ._grep import GREP
from ._map import MAP

__all__ = ["COMMANDS", "main"]

# The subcommands, in the order `procpool --help` lists them. `procpool bench` (the benchmark
# suite's side-by-side run) joins them here as one more Command.
COMMANDS: list[Command] = [MAP, GREP, BLUR]


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    """The command line's parser, one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="procpool",
        description="Run work in parallel in a pool of worker processes.",
        epilog="Run `procpool COMMAND --help` for a command's options.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands:
        sub = subparsers.add_parser(
            command.name,
            help=command.summary,
            description=command.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument(
            "-j",
            "--workers",
            type=_positive_int,
            default=None,
            metavar="N",
            help="worker processes (default: the CPUs this process may use)",
        )
        command.configure(sub)
        sub.set_defaults(_command=command, _parser=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
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
