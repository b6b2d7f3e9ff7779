"""``procpool map``: call a Python function on each item of a list or a stream, in parallel.

A feeder thread reads the items (arguments, or lines of stdin) and submits them in chunks, at
most a few chunks per worker ahead of the output, so an endless stream works; the main thread
prints each result as it can: in input order, or as they finish with ``--unordered``. Each
item's outcome is turned into its line of output in the worker (``str`` or JSON), so a result
that does not print fails its own item, not the run.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import pickle
import queue
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from ._common import EXIT_FAILED, EXIT_OK, Command, UsageError, make_pool, progress_bar, warn

if TYPE_CHECKING:
    from procpool import Pool

__all__ = ["COMMAND", "load_function"]

# Chunks in flight per worker: enough to keep every worker busy while results are printed.
_AHEAD_PER_WORKER = 4

_DESCRIPTION = """\
Call FUNC on each ITEM in a pool of worker processes and print each result on its own line, in
input order (--unordered: as they finish). FUNC is MODULE:NAME (a module importable from here,
the current directory included) or FILE.py:NAME. With no ITEM, or `-`, the items are the lines
of stdin, read as the work goes (so a stream works). Each item is passed as a string, or, with
--json, decoded from JSON; with --json each result is printed as JSON too.

An item that fails is reported on stderr with its error (-v: the worker's traceback) and the
others go on. A worker that dies or a call that passes --timeout fails its item (--retries
re-runs it first).

exit status: 0 every item succeeded, 1 some failed, 2 usage error, 130 Ctrl-C.

examples:
  procpool map math:factorial 10 20 30
  seq 1000 | procpool map --json -j 8 ./tasks.py:crunch -
  find . -name '*.csv' | procpool map --unordered --progress mymodule:load
"""


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("function", metavar="FUNC", help="MODULE:NAME or FILE.py:NAME")
    parser.add_argument("items", nargs="*", metavar="ITEM", help="the items (none or -: stdin)")
    parser.add_argument("--unordered", action="store_true", help="print results as they finish")
    parser.add_argument(
        "--json", action="store_true", help="items and results are JSON, one a line"
    )
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="stop a call that runs longer (kills it)"
    )
    parser.add_argument(
        "--retries", type=int, default=0, metavar="N", help="re-run a crashed or timed-out item"
    )
    parser.add_argument(
        "--chunksize",
        type=int,
        default=1,
        metavar="N",
        help="items sent to a worker at once (default 1; raise it for many small items)",
    )
    parser.add_argument("--progress", action="store_true", help="a progress bar on stderr")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="the traceback of each failure"
    )


def load_function(spec: str) -> Callable[[Any], Any]:
    """The function ``MODULE:NAME`` or ``PATH.py:NAME`` names (``UsageError`` if none)."""
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise UsageError(f"FUNC must be MODULE:NAME or FILE.py:NAME, not {spec!r}")
    try:
        module = _load_file(where) if where.endswith(".py") or os.sep in where else _import(where)
        function = module
        for part in name.split("."):
            function = getattr(function, part)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"cannot load {spec!r}: {type(exc).__name__}: {exc}") from None
    if not callable(function):
        raise UsageError(f"{spec!r} is not callable")
    return function  # type: ignore[no-any-return]


def _import(name: str) -> Any:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `procpool map tasks:f` finds ./tasks.py, as python -m
    return importlib.import_module(name)


def _load_file(path: str) -> Any:
    """Load a file as a module whose functions travel to the workers by value."""
    import cloudpickle

    if not os.path.isfile(path):
        raise UsageError(f"no such file: {path!r}")
    name = "_procpool_map_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)
    return module


class _Apply:
    """What a worker runs: the function on each item of a chunk, each outcome a line of text.

    An outcome is ``(True, output)`` or ``(False, "Type: message", traceback text)``. The
    function is pickled once, with cloudpickle, so that one loaded from a file travels by
    value (see :func:`_load_file`) and each chunk's task costs only a copy of the bytes."""

    def __init__(self, function: Callable[[Any], Any], as_json: bool) -> None:
        import cloudpickle

        self.function = function
        self.as_json = as_json
        self._blob: bytes = cloudpickle.dumps(function)

    def __reduce__(self) -> tuple[Callable[[bytes, bool], _Apply], tuple[bytes, bool]]:
        return _restore, (self._blob, self.as_json)

    def __call__(self, chunk: list[tuple[int, Any]]) -> list[tuple[Any, ...]]:
        return [self._one(item) for _, item in chunk]

    def _one(self, item: Any) -> tuple[Any, ...]:
        try:
            if self.as_json:
                item = json.loads(item)
            result = self.function(item)
            return True, json.dumps(result) if self.as_json else str(result)
        except Exception as exc:
            return False, _one_line(exc), "".join(traceback.format_exception(exc))


def _restore(blob: bytes, as_json: bool) -> _Apply:
    apply = _Apply.__new__(_Apply)
    apply.function, apply.as_json, apply._blob = pickle.loads(blob), as_json, blob
    return apply


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _items(args: argparse.Namespace) -> tuple[Iterable[str], int | None]:
    """The items and, where known, how many."""
    if args.items and args.items != ["-"]:
        return args.items, len(args.items)
    # Lines that are not UTF-8 still arrive (and leave), as Python's file names do.
    sys.stdin.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
    sys.stdout.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
    return (line.rstrip("\n") for line in sys.stdin), None


def _run(args: argparse.Namespace) -> int:
    if args.chunksize < 1 or args.retries < 0 or (args.timeout is not None and args.timeout <= 0):
        raise UsageError("--chunksize must be 1+, --retries 0+, --timeout positive")
    if args.timeout is not None and args.chunksize != 1:
        raise UsageError("--timeout applies to each call: it needs --chunksize 1")
    function = load_function(args.function)
    items, total = _items(args)
    apply = _Apply(function, args.json)
    options: dict[str, Any] = {"retries": args.retries}
    if args.timeout is not None:
        options["timeout"] = args.timeout
    failures = 0
    with (
        make_pool(args.workers) as pool,
        progress_bar("force" if args.progress else False, total) as bar,
    ):
        jobs = _Jobs(pool, apply, options, args.chunksize)
        jobs.start(items)
        for chunk, outcomes in jobs.results(ordered=not args.unordered):
            for (_, item), outcome in zip(chunk, outcomes, strict=True):
                if outcome[0]:
                    print(outcome[1], flush=True)  # a stream's results as they come
                else:
                    failures += 1
                    _report(item, outcome, args.verbose)
            bar.add(len(chunk))
    return EXIT_FAILED if failures else EXIT_OK


def _report(item: Any, outcome: tuple[Any, ...], verbose: bool) -> None:
    warn("map", f"item {item!r} failed: {outcome[1]}")
    if verbose and len(outcome) > 2 and outcome[2]:
        print(outcome[2].rstrip("\n"), file=sys.stderr, flush=True)


_Chunk = list[tuple[int, Any]]


class _Jobs:
    """Submits chunks of items as they are read and hands back their outcomes.

    A chunk whose whole task failed (its worker died, it timed out) fails each of its items
    with that error."""

    def __init__(self, pool: Pool, apply: _Apply, options: dict[str, Any], chunksize: int) -> None:
        self._pool = pool
        self._apply = apply
        self._options = options
        self._chunksize = chunksize
        self._room = threading.Semaphore(_AHEAD_PER_WORKER * len(pool._pool))
        # (chunk, outcomes) as they arrive; (None, chunks submitted) once the input has ended;
        # (None, exception) if reading the input failed.
        self._arrived: queue.SimpleQueue[tuple[_Chunk | None, Any]] = queue.SimpleQueue()

    def start(self, items: Iterable[str]) -> None:
        threading.Thread(
            target=self._feed, args=(iter(items),), name="procpool-map-feeder", daemon=True
        ).start()

    def results(self, ordered: bool) -> Iterator[tuple[_Chunk, list[tuple[Any, ...]]]]:
        waiting: dict[int, tuple[_Chunk, list[tuple[Any, ...]]]] = {}
        received, expected, next_index = 0, -1, 0
        while received != expected:
            chunk, outcomes = self._arrived.get()
            if chunk is None:
                if isinstance(outcomes, BaseException):
                    raise outcomes
                expected = outcomes
                continue
            received += 1
            self._room.release()
            if not ordered:
                yield chunk, outcomes
                continue
            waiting[chunk[0][0]] = (chunk, outcomes)
            while next_index in waiting:
                chunk, outcomes = waiting.pop(next_index)
                next_index += len(chunk)
                yield chunk, outcomes

    def _feed(self, items: Iterator[str]) -> None:
        submitted = 0
        index = 0
        try:
            while chunk := list(islice(items, self._chunksize)):
                numbered = list(enumerate(chunk, index))
                index += len(chunk)
                self._room.acquire()
                self._submit(numbered)
                submitted += 1
        except BaseException as exc:
            self._arrived.put((None, exc))
            return
        self._arrived.put((None, submitted))

    def _submit(self, chunk: _Chunk) -> None:
        def failed(exc: BaseException) -> None:
            # The whole task failed: -v shows the error in full (with the record of the
            # attempts that --retries made).
            detail = "".join(traceback.format_exception(exc))
            self._arrived.put((chunk, [(False, _one_line(exc), detail)] * len(chunk)))

        self._pool.apply_async(
            self._apply,
            (chunk,),
            callback=lambda outcomes: self._arrived.put((chunk, outcomes)),
            error_callback=failed,
            **self._options,
        )


COMMAND = Command(
    _DESCRIPTION,
    _configure,
    _run,
)
