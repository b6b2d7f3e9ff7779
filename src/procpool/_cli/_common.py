"""What the subcommands share: the command interface, exit statuses, errors, the pool."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from procpool import Pool
    from procpool._progress import Progress, ProgressOption

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Command",
    "UsageError",
    "make_pool",
    "progress_bar",
    "warn",
]

EXIT_OK = 0
EXIT_FAILED = 1  # some items failed (grep: nothing matched)
EXIT_USAGE = 2  # the command line is wrong (grep: an error occurred)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT
EXIT_BROKEN_PIPE = 141  # stdout's reader went away, as a shell reports SIGPIPE


class UsageError(Exception):
    """The command line asks for something impossible: exit 2 with this message."""


class Command:
    """One subcommand: its ``--help`` text, its options and what it runs."""

    def __init__(
        self,
        description: str,
        configure: Callable[[argparse.ArgumentParser], None],
        run: Callable[[argparse.Namespace], int],
    ) -> None:
        self.description = description
        self.configure = configure
        self.run = run


def warn(command: str, message: str) -> None:
    """One line on stderr, prefixed like grep's own (``procpool grep: path: reason``)."""
    print(f"procpool {command}: {message}", file=sys.stderr, flush=True)


def make_pool(workers: int | None, *, fork: bool = False, **options: Any) -> Pool:
    """A pool for a command. ``fork``: start the workers by forking this process, which is
    the fastest way, when it is safe: no other thread runs yet, so none can hold a lock that
    the children would inherit locked. The commands that run only their own code ask for it."""
    import procpool

    context = None
    if fork and threading.active_count() == 1 and "fork" in procpool.get_all_start_methods():
        context = procpool.get_context("fork")
        # A forked worker flushes its copy of these buffers when it exits: empty them first,
        # or what the command has printed so far would be printed again.
        sys.stdout.flush()
        sys.stderr.flush()
    return procpool.Pool(workers, context=context, **options)


def progress_bar(option: ProgressOption, total: int | None) -> Progress:
    """A bar on stderr for a command's items (``True``: if stderr is a terminal)."""
    from procpool._progress import Progress

    return Progress.start(option, total)
