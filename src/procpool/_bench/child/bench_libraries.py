"""One adapter per library: the same few calls over each library's own API.

The workloads speak to an ``Adapter``; each library's differences live here: executors have no
``imap`` (their ``map`` with ``chunksize`` stands in, and it submits its whole input at once),
mpire unpacks tuples, lists and dicts into arguments (each item travels in a 1-tuple) and
concatenates array results unless told not to. A call a library lacks raises ``Unsupported``,
which the report prints as "n/a". Each library is imported only when it is measured.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Task = Callable[[Any], Any]


class Unsupported(Exception):
    """The library has no equivalent of this call; the message says what it lacks."""


class Adapter(Protocol):
    """The calls the workloads make, over one library's pool."""

    start_method: str

    def map(self, fn: Task, items: Sequence[Any], chunksize: int | None = None) -> list[Any]:
        """All results in order; ``chunksize=None`` is the library's default chunking."""

    def imap(self, fn: Task, items: Sequence[Any], chunksize: int) -> Iterator[Any]:
        """Results in order, one at a time."""

    def imap_lazy(self, fn: Task, items: Iterator[Any]) -> Iterator[Any]:
        """Results in order over an unbounded iterator, with the library's default chunking."""

    def apply(self, fn: Task, arg: Any) -> Any:
        """One task submitted asynchronously, then waited for."""

    def close(self) -> None:
        """Let the submitted work finish, then stop the workers and wait for them."""

    def terminate(self) -> None:
        """Stop the workers now, dropping unfinished work."""


class PoolAdapter:
    """``multiprocessing.Pool`` and the pools that copy its API (procpool, billiard)."""

    def __init__(self, pool: Any, start_method: str) -> None:
        self.pool = pool
        self.start_method = start_method

    def map(self, fn: Task, items: Sequence[Any], chunksize: int | None = None) -> list[Any]:
        return list(self.pool.map(fn, items, chunksize))

    def imap(self, fn: Task, items: Sequence[Any], chunksize: int) -> Iterator[Any]:
        return iter(self.pool.imap(fn, items, chunksize))

    def imap_lazy(self, fn: Task, items: Iterator[Any]) -> Iterator[Any]:
        return iter(self.pool.imap(fn, items))

    def apply(self, fn: Task, arg: Any) -> Any:
        return self.pool.apply_async(fn, (arg,)).get()

    def close(self) -> None:
        self.pool.close()
        self.pool.join()

    def terminate(self) -> None:
        self.pool.terminate()
        self.pool.join()


class ExecutorAdapter:
    """``concurrent.futures.ProcessPoolExecutor`` and loky's executor."""

    def __init__(self, executor: Any, start_method: str) -> None:
        self.executor = executor
        self.start_method = start_method

    def map(self, fn: Task, items: Sequence[Any], chunksize: int | None = None) -> list[Any]:
        return list(self.executor.map(fn, items, chunksize=chunksize or 1))

    def imap(self, fn: Task, items: Sequence[Any], chunksize: int) -> Iterator[Any]:
        return iter(self.executor.map(fn, items, chunksize=chunksize))

    def imap_lazy(self, fn: Task, items: Iterator[Any]) -> Iterator[Any]:
        raise Unsupported("Executor.map submits its whole input before returning")

    def apply(self, fn: Task, arg: Any) -> Any:
        return self.executor.submit(fn, arg).result()

    def close(self) -> None:
        self.executor.shutdown(wait=True)

    def terminate(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class LokyAdapter(ExecutorAdapter):
    """loky's executor: its ``shutdown`` kills the workers instead of cancelling futures."""

    def terminate(self) -> None:
        self.executor.shutdown(wait=True, kill_workers=True)


def _one_tuples(items: Iterable[Any]) -> Iterator[tuple[Any]]:
    """mpire calls ``fn(*item)`` for tuples and lists and ``fn(**item)`` for dicts."""
    return ((item,) for item in items)


class MpireAdapter:
    """mpire's ``WorkerPool``, kept alive between calls like the other libraries' pools."""

    def __init__(self, pool: Any, start_method: str) -> None:
        self.pool = pool
        self.start_method = start_method

    def map(self, fn: Task, items: Sequence[Any], chunksize: int | None = None) -> list[Any]:
        return list(
            self.pool.map(
                fn,
                _one_tuples(items),
                iterable_len=len(items),
                chunk_size=chunksize,
                concatenate_numpy_output=False,
            )
        )

    def imap(self, fn: Task, items: Sequence[Any], chunksize: int) -> Iterator[Any]:
        return iter(
            self.pool.imap(fn, _one_tuples(items), iterable_len=len(items), chunk_size=chunksize)
        )

    def imap_lazy(self, fn: Task, items: Iterator[Any]) -> Iterator[Any]:
        return iter(self.pool.imap(fn, _one_tuples(items)))

    def apply(self, fn: Task, arg: Any) -> Any:
        return self.pool.apply_async(fn, args=(arg,)).get()

    def close(self) -> None:
        self.pool.stop_and_join()

    def terminate(self) -> None:
        self.pool.terminate()


def _multiprocessing(processes: int, method: str | None = None) -> Adapter:
    import multiprocessing

    context = multiprocessing.get_context(method)
    return PoolAdapter(context.Pool(processes), context.get_start_method())


def _procpool(processes: int) -> Adapter:
    import procpool

    return PoolAdapter(procpool.Pool(processes), str(procpool.get_start_method()))


def _billiard(processes: int) -> Adapter:
    import billiard

    return PoolAdapter(billiard.Pool(processes), str(billiard.get_start_method()))


def _executor(processes: int) -> Adapter:
    import concurrent.futures
    import multiprocessing

    # The executor takes the standard library's default context, as a user's code would.
    executor = concurrent.futures.ProcessPoolExecutor(processes)
    return ExecutorAdapter(executor, multiprocessing.get_start_method())


def _loky(processes: int) -> Adapter:
    import loky

    return LokyAdapter(loky.get_reusable_executor(max_workers=processes), "loky")


def _mpire(processes: int) -> Adapter:
    from mpire.context import DEFAULT_START_METHOD
    from mpire.pool import WorkerPool

    return MpireAdapter(WorkerPool(n_jobs=processes, keep_alive=True), DEFAULT_START_METHOD)


@dataclass(frozen=True)
class Library:
    """A library as the suite runs it: its column title, the module that defines its pool, how
    to make a pool, and how it is called, in words for the results page."""

    key: str
    title: str
    module: str
    make: Callable[[int], Adapter]
    how: str
    startup_only: bool = False

    def installed(self) -> bool:
        """Whether its module can be imported here (importing its parent package at most)."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:  # the parent package is missing
            return False

    def load(self) -> None:
        """Import the module that defines its pool (a program imports it before any pool)."""
        importlib.import_module(self.module)


BASELINE = "multiprocessing"

POOL_API = "map, imap, apply_async(...).get(), close() and join()"
EXECUTOR_API = (
    "map(chunksize=1 unless said) for map and imap, submit(...).result() for apply_async; "
    "shutdown(wait=True)"
)

LIBRARIES: dict[str, Library] = {
    library.key: library
    for library in (
        Library(
            BASELINE,
            "multiprocessing.Pool",
            "multiprocessing.pool",
            _multiprocessing,
            f"multiprocessing.Pool(processes), the default start method; {POOL_API}",
        ),
        Library(
            "procpool", "procpool", "procpool", _procpool, f"procpool.Pool(processes); {POOL_API}"
        ),
        Library(
            "concurrent.futures",
            "ProcessPoolExecutor",
            "concurrent.futures.process",
            _executor,
            f"concurrent.futures.ProcessPoolExecutor(processes); {EXECUTOR_API}",
        ),
        Library(
            "loky",
            "loky",
            "loky",
            _loky,
            f"loky.get_reusable_executor(max_workers=processes); {EXECUTOR_API}",
        ),
        Library(
            "mpire",
            "mpire",
            "mpire.pool",
            _mpire,
            "mpire.WorkerPool(n_jobs=processes, keep_alive=True) (kept alive like the other "
            "pools); each item passed as a 1-tuple, map(concatenate_numpy_output=False), "
            "imap, apply_async(...).get(), stop_and_join()",
        ),
        Library(
            "billiard",
            "billiard",
            "billiard.pool",
            _billiard,
            f"billiard.Pool(processes); {POOL_API}",
        ),
        # The standard library's other start method on Linux, where start-up is what differs.
        Library(
            "multiprocessing-forkserver",
            "multiprocessing.Pool (forkserver)",
            "multiprocessing.pool",
            lambda processes: _multiprocessing(processes, "forkserver"),
            "multiprocessing.get_context('forkserver').Pool(processes): start-up rows only",
            startup_only=True,
        ),
    )
}
