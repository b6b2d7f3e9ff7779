"""``procpool grep``: which files under a tree contain a string, searched in parallel.

Walking a large tree costs about as much as reading its files (Python's standard library: 8,700
directories, 0.1 s of system calls), so the workers share both: each step of the search
(:class:`._search.Grep`) walks part of the tree, searches the files it found and hands back the
directories it did not reach, which become new steps for any worker. The main thread only
writes what comes back. A small tree (fewer files than one step's budget) is searched in this
process: starting workers would cost more than it saves.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Command, UsageError, make_pool, warn
from ._search import Grep, Outcome, Searcher, StepOutcome, Task
from ._walk import DirJob, Walk

if TYPE_CHECKING:
    from procpool import Pool

__all__ = ["COMMAND"]

_DESCRIPTION = """\
Search the files under each PATH (default: the current directory) for PATTERN, a fixed string
(-E: a regular expression in Python's `re` syntax, where grep's [[:digit:]]-style classes and
\\< \\> word boundaries work too), in parallel, and print what `grep -r` prints: `path:line`
for each matching line, `path` with -l, `path:count` with -c.

As `grep -r` does, symbolic links are followed only when named on the command line and devices,
FIFOs and sockets inside a tree are skipped. Unlike grep, hidden files and directories (a
leading dot) are skipped unless --hidden, and binary files (a NUL byte in their first 32 KiB)
are skipped unless -a: the output is that of `grep -rI`. Unreadable files are reported on stderr
and the search goes on. Files are searched as bytes; -i folds ASCII letters only (grep in the C
locale). Output comes in the order files finish; --sort path orders it.

exit status: 0 a line matched, 1 none did, 2 an error occurred (as grep).

examples:
  procpool grep -l --glob '*.py' Pool /usr/lib/python3
  procpool grep -n -w -E 'def \\w+_test' src tests
  procpool grep -c --gitignore TODO .
"""


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", metavar="PATTERN", help="the string (or -E expression)")
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files and directories")
    parser.add_argument(
        "-E", "--regex", action="store_true", help="PATTERN is a regular expression (Python's)"
    )
    parser.add_argument("-i", "--ignore-case", action="store_true", help="ignore case")
    parser.add_argument(
        "-w", "--word-regexp", action="store_true", help="match whole words only (as grep)"
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("-l", "--files-with-matches", action="store_true", help="paths only")
    output.add_argument("-c", "--count", action="store_true", help="matching lines per file")
    parser.add_argument("-n", "--line-number", action="store_true", help="add line numbers")
    parser.add_argument("-a", "--text", action="store_true", help="search binary files too")
    parser.add_argument(
        "--glob",
        action="append",
        default=[],
        metavar="GLOB",
        help="search only files whose name matches GLOB; !GLOB excludes files and directories "
        "(repeatable)",
    )
    parser.add_argument("--hidden", action="store_true", help="search hidden files and dirs")
    parser.add_argument(
        "--gitignore", action="store_true", help="skip what .gitignore files ignore"
    )
    parser.add_argument(
        "--sort", choices=["none", "path"], default="none", help="order of the output"
    )


def _run(args: argparse.Namespace) -> int:
    grep = Grep(
        _searcher(args), Walk(globs=args.glob, hidden=args.hidden, gitignore=args.gitignore)
    )
    failed = False

    def on_error(message: str) -> None:
        nonlocal failed
        failed = True
        warn("grep", message)

    matched = False
    sorted_output: list[tuple[str, bytes]] = []
    out = sys.stdout.buffer
    for found, errors, hit in _search(grep, args.paths, args.workers, on_error):
        matched |= hit
        for message in errors:
            on_error(message)
        if args.sort == "path":
            sorted_output += found
        else:
            out.writelines(output for _, output in found)
    out.writelines(output for _, output in sorted(sorted_output))
    out.flush()
    return EXIT_USAGE if failed else EXIT_OK if matched else EXIT_FAILED


def _searcher(args: argparse.Namespace) -> Searcher:
    pattern = args.pattern.encode(sys.getfilesystemencoding(), "surrogateescape")
    operands = args.paths
    searcher = Searcher(
        pattern,
        regex=args.regex,
        ignore_case=args.ignore_case,
        word=args.word_regexp,
        mode="list" if args.files_with_matches else "count" if args.count else "lines",
        line_numbers=args.line_number,
        text=args.text,
        # As grep: no file name when the only operand is a file.
        prefix=not (len(operands) == 1 and not os.path.isdir(operands[0])),
    )
    try:
        searcher.compile()
    except re.error as exc:
        raise UsageError(f"invalid regular expression {args.pattern!r}: {exc}") from None
    return searcher


def _search(
    grep: Grep, operands: list[str], workers: int | None, on_error: Callable[[str], None]
) -> Iterator[Outcome]:
    """Each step's outcome. The first step walks here; a tree it walks to the end (fewer
    files than a step's budget) is searched here too, since starting workers would cost more
    than they save. Otherwise the workers walk and search the rest, a step each."""
    files, others, stack = grep.walk.start(operands, on_error)
    if others:
        yield grep.searcher.search_batch(others, regular=False)
    files += grep.walk.explore(stack, grep.budget, on_error)
    if not stack:
        yield grep.searcher.search_batch(files)
        return
    with make_pool(workers, fork=True, retries=1) as pool:
        yield from _Steps(grep, pool).run(files, stack, on_error)


class _Steps:
    """Hands out steps of a search to a pool, the directories each step did not reach becoming
    new steps, with about two steps per worker in flight."""

    def __init__(self, grep: Grep, pool: Pool) -> None:
        self._grep = grep
        self._pool = pool
        self._target = 2 * len(pool._pool)
        self._arrived: queue.SimpleQueue[StepOutcome | BaseException] = queue.SimpleQueue()
        self._in_flight = 0

    def run(
        self, files: list[str], stack: list[DirJob], on_error: Callable[[str], None]
    ) -> Iterator[Outcome]:
        if files:
            self._submit((files, []))
        self._share(stack)
        while self._in_flight:
            outcome = self._arrived.get()
            self._in_flight -= 1
            if isinstance(outcome, BaseException):
                # A step's worker died twice: its files and directories are lost; say so.
                on_error(f"part of the tree was not searched: {outcome}")
                continue
            found, errors, matched, leftover = outcome
            yield found, errors, matched
            self._share(leftover)

    def _share(self, stack: list[DirJob]) -> None:
        pieces = max(1, min(len(stack), self._target - self._in_flight))
        for piece in range(pieces):
            if stack[piece::pieces]:
                self._submit(([], stack[piece::pieces]))

    def _submit(self, task: Task) -> None:
        self._in_flight += 1
        self._pool.apply_async(
            self._grep.step,
            (task,),
            callback=self._arrived.put,
            error_callback=self._arrived.put,
        )


COMMAND = Command(
    _DESCRIPTION,
    _configure,
    _run,
)
