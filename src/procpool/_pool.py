"""``procpool.Pool``: ``multiprocessing.Pool``'s API on a backend that never hangs.

The facade owns no pool state beyond its lifecycle: it validates arguments, pickles functions
and arguments in the caller's thread, hands the resulting tasks to its backend and returns the
result objects the backend fills in. Lazy inputs (``imap``, ``imap_unordered``) are read by one
feeder thread per call, which runs at most a window of chunks ahead of the consumer.
"""

from __future__ import annotations

import dataclasses
import multiprocessing.pool
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sized
from types import FunctionType
from typing import Any, NoReturn, TypeVar, Unpack

from ._backend import Backend, LocalWorkers, PreparedTask
from ._backends import make_backend
from ._callbacks import CallbackRunner
from ._context import get_context
from ._errors import PoolTerminatedError
from ._feeding import IMAP_MAX_CHUNK, ChunkSizer, Feeder, fixed_size, map_chunk_cap
from ._options import ExceptionTypes, MapOptions, Options, TaskOptions, exception_types
from ._policy import Lifecycle
from ._progress import Progress
from ._protocol import Mode
from ._results import ApplyResult, IMapIterator, IMapUnorderedIterator, MapResult, _LazyIterator
from ._serialize import dumps, dumps_arguments
from ._shm import SegmentPool

__all__ = ["Pool"]

R = TypeVar("R")
_Lazy = TypeVar("_Lazy", bound=_LazyIterator[Any])

# How many chunks a map may have in flight, per worker (and at least).
_WINDOW_PER_WORKER = 64
_MIN_WINDOW = 128
# How many items an imap may read ahead of its consumer, per worker (and at least): its window
# of chunks holds that many of its largest chunks.
_IMAP_ITEMS_PER_WORKER = 1024
_IMAP_MIN_ITEMS = 2048


class Pool(multiprocessing.pool.Pool):
    """A pool of worker processes, used exactly like ``multiprocessing.Pool``.

    It is a ``multiprocessing.pool.Pool`` for ``isinstance`` (code such as dask's schedulers
    branches on that type), but it never runs the standard library's machinery: the base
    class's ``__init__`` is not called, and every method of the base class that procpool does
    not override raises ``NotImplementedError`` (see ``_block_stdlib_machinery``).

    Differences from the standard library, each deliberate:

    * a worker that dies (killed, crashed, ``os._exit``) fails only the task it was running, with
      :class:`procpool.WorkerLostError`; the pool replaces it and goes on;
    * an initializer that raises fails the pool's tasks with :class:`procpool.InitializerError`
      instead of respawning workers forever;
    * ``terminate()`` fails every unfinished result with :class:`procpool.PoolTerminatedError`
      instead of leaving ``get()`` blocked forever;
    * leaving a ``with Pool() as pool:`` block normally waits for the submitted work (``close()``
      then ``join()``); leaving it by an exception terminates;
    * functions travel with cloudpickle, so lambdas and closures work under every start method;
    * ``processes=None`` means the CPUs this process may use, not the machine's count;
    * ``Ctrl-C`` while waiting on the pool stops its workers and reaches the caller.

    Additions: ``task_timeout`` (seconds a task may run before its worker is killed),
    ``retries`` and ``retry_on`` (re-run a task after a worker loss, a timeout or one of these
    exceptions) and ``max_memory_per_child`` (replace a worker whose memory grew past it) are
    the defaults of the keyword options every submitting method takes (``timeout``, ``retries``,
    ``retry_on``, and for the map family ``return_exceptions``); ``AsyncResult.cancel()``.

    ``backend="dask"`` runs the tasks on a Dask cluster instead, with the same API and
    guarantees: ``address`` names its scheduler, ``client`` passes a ``distributed.Client``, and
    neither starts a local cluster that the pool stops with itself (``docs/dask.md``).
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        task_timeout: float | None = None,
        retries: int = 0,
        retry_on: ExceptionTypes | None = None,
        max_memory_per_child: int | None = None,
        backend: str | None = None,
        address: str | None = None,
        client: Any = None,
    ) -> None:
        self._state = Lifecycle.INIT
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0
        ):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_memory_per_child is not None and not (
            isinstance(max_memory_per_child, int) and max_memory_per_child > 0
        ):
            raise ValueError("max_memory_per_child must be a positive number of bytes or None")
        self._options = Options(task_timeout, retries, exception_types(retry_on))
        self._ctx = context if context is not None else get_context()
        self._callbacks = CallbackRunner()
        # The backend runs the tasks: local worker processes (large buffers of the arguments
        # travel in the shared-memory segments), or a Dask cluster (docs/dask.md).
        built = make_backend(
            backend,
            address,
            client,
            context=context,
            processes=processes,
            maxtasksperchild=maxtasksperchild,
            initializer=None if initializer is None else (initializer, tuple(initargs)),
            max_memory_per_child=max_memory_per_child,
        )
        self._backend: Backend = built.backend
        self._segments: SegmentPool | None = built.segments
        self._processes = built.size
        self._dumps_callable = built.dumps_callable
        self._chunk_seconds = built.chunk_seconds
        self._items_marked = built.items_marked
        self._control = _Control(self._backend)
        self._state = Lifecycle.RUN

    def __repr__(self) -> str:
        return f"<procpool.Pool state={self._state.value} pool_size={self._processes}>"

    def __reduce__(self) -> NoReturn:
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __del__(self) -> None:
        if getattr(self, "_state", None) is Lifecycle.RUN:
            warnings.warn(
                f"unclosed running multiprocessing pool {self!r}",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )
            # Nobody can submit to it any more: let its work finish, then release the workers.
            self._control.close()

    # -- the standard library's compatibility surface ------------------------------------------

    @property
    def _pool(self) -> list[Any]:
        """The worker processes alive now (``multiprocessing.Pool._pool``; none on a cluster)."""
        return self._backend.processes() if isinstance(self._backend, LocalWorkers) else []

    def _repopulate_pool(self) -> None:
        """Start workers until the pool is at full size again (a cluster's are its own)."""
        if isinstance(self._backend, LocalWorkers):
            self._backend.repopulate()

    def _check_running(self) -> None:
        if self._state is not Lifecycle.RUN or self._control.terminated:
            raise ValueError("Pool not running")

    # -- submitting work -----------------------------------------------------------------------
    # (mypy's override checks: the keyword-only options are additions, and the results are
    # procpool's own classes, which share the standard library's API but not its base classes.)
    # Each method keeps the standard library's signature; the keyword-only ``options`` are
    # procpool's (TaskOptions: timeout, retries, retry_on; MapOptions adds return_exceptions).

    def apply(
        self,
        func: Callable[..., R],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},
        **options: Unpack[TaskOptions],
    ) -> R:
        """Call ``func(*args, **kwds)`` in a worker and return its result."""
        return self.apply_async(func, args, kwds, **options).get()

    def apply_async(  # type: ignore[override]
        self,
        func: Callable[..., R],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},
        callback: Callable[[R], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        **options: Unpack[TaskOptions],
    ) -> ApplyResult[R]:
        """Call ``func(*args, **kwds)`` in a worker; the result arrives in the returned object."""
        self._check_running()
        if "return_exceptions" in options:
            raise TypeError("unexpected keyword argument(s): return_exceptions")
        chosen = self._options.override(options)
        result: ApplyResult[R] = ApplyResult(
            self._callbacks, self._control, callback, error_callback
        )
        try:
            task = self._prepare(chosen, func)(Mode.APPLY, (tuple(args), dict(kwds)), result, 0)
        except Exception as exc:
            result._fail(0, exc)
        else:
            self._backend.submit([task])
        return result

    def map(
        self,
        func: Callable[[Any], R],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        **options: Unpack[MapOptions],
    ) -> list[R]:
        """``list(map(func, iterable))``, computed in the workers, in order."""
        return self._map_async(func, iterable, Mode.MAP, chunksize, None, None, options).get()

    def map_async(  # type: ignore[override]
        self,
        func: Callable[[Any], R],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[list[R]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        **options: Unpack[MapOptions],
    ) -> MapResult[R]:
        """Like :meth:`map`, returning at once; the list arrives in the returned object."""
        return self._map_async(
            func, iterable, Mode.MAP, chunksize, callback, error_callback, options
        )

    def starmap(
        self,
        func: Callable[..., R],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        **options: Unpack[MapOptions],
    ) -> list[R]:
        """Like :meth:`map`, but each item is unpacked as ``func``'s arguments."""
        return self._map_async(func, iterable, Mode.STARMAP, chunksize, None, None, options).get()

    def starmap_async(  # type: ignore[override]
        self,
        func: Callable[..., R],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[R]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        **options: Unpack[MapOptions],
    ) -> MapResult[R]:
        """Like :meth:`starmap`, returning at once."""
        return self._map_async(
            func, iterable, Mode.STARMAP, chunksize, callback, error_callback, options
        )

    def imap(  # type: ignore[override]
        self,
        func: Callable[[Any], R],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        **options: Unpack[MapOptions],
    ) -> IMapIterator[R]:
        """A lazy ``map``: results in order, as they are ready; the input is read as needed."""
        return self._imap(IMapIterator, func, iterable, chunksize, options)

    def imap_unordered(  # type: ignore[override]
        self,
        func: Callable[[Any], R],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        **options: Unpack[MapOptions],
    ) -> IMapUnorderedIterator[R]:
        """Like :meth:`imap`, but results come in the order they finish."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize, options)

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Accept no more work; what was submitted still runs, then the workers exit."""
        if self._state is Lifecycle.RUN:
            self._state = Lifecycle.CLOSE
        self._control.close()

    def terminate(self) -> None:
        """Stop now: kill the workers; every unfinished result raises ``PoolTerminatedError``."""
        self._state = Lifecycle.TERMINATE
        self._control.terminate()

    def join(self) -> None:
        """Wait for the workers to exit; call :meth:`close` or :meth:`terminate` first.

        Ctrl-C while waiting terminates the pool and the KeyboardInterrupt goes on.
        """
        if self._state is Lifecycle.RUN and not self._control.terminated:
            raise ValueError("Pool is still running")
        if self._state not in (Lifecycle.RUN, Lifecycle.CLOSE, Lifecycle.TERMINATE):
            raise ValueError("In unknown state")
        try:
            self._backend.join()
        except KeyboardInterrupt:
            self.terminate()
            raise
        self._callbacks.close()

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        # Deliberately unlike the standard library, which terminates in both cases: leaving the
        # block normally waits for the work that was submitted in it.
        if exc_type is None:
            self.close()
        else:
            self.terminate()
        self.join()

    # -- helpers -------------------------------------------------------------------------------

    def _prepare(
        self, options: Options, func: Any, function: bytes | None = None
    ) -> Callable[..., PreparedTask]:
        """Pickle ``func`` (unless ``function`` is it, pickled) and the options once for a call;
        the result makes its tasks."""
        if function is None:
            function = self._dumps_callable(func)
        retry_on = dumps(options.retry_on) if options.retry_on else b""
        label = repr(getattr(func, "__qualname__", None) or type(func).__qualname__)

        def task(mode: Mode, arguments: Any, sink: Any, index: int) -> PreparedTask:
            data, segments = dumps_arguments(arguments, self._segments)
            items = 1 if mode is Mode.APPLY else len(arguments)
            return PreparedTask(
                mode,
                function,
                data,
                sink,
                index,
                label,
                options.timeout,
                options.retries,
                retry_on,
                options.return_exceptions,
                segments,
                items,
            )

        return task

    def _window(self) -> int:
        return max(_MIN_WINDOW, _WINDOW_PER_WORKER * self._processes)

    def _imap_window(self) -> int:
        items = max(_IMAP_MIN_ITEMS, _IMAP_ITEMS_PER_WORKER * self._processes)
        return items // IMAP_MAX_CHUNK

    def _map_async(
        self,
        func: Callable[..., R],
        iterable: Iterable[Any],
        mode: Mode,
        chunksize: int | None,
        callback: Callable[[list[R]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        options: MapOptions,
    ) -> MapResult[R]:
        self._check_running()
        progress = options.pop("progress", None)
        chosen = self._options.override(options)
        chunksize = chosen.chunksize_allowed(chunksize)
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        items = iterable if hasattr(iterable, "__len__") else list(iterable)
        length = len(items)  # type: ignore[arg-type]
        result: MapResult[R] = MapResult(
            self._callbacks,
            self._control,
            length,
            callback,
            error_callback,
            chosen.return_exceptions,
            self._window(),
            Progress.start(progress, length) if progress else None,
        )
        if length:
            cap = map_chunk_cap(length, self._processes)
            self._start_feed(result, items, chunksize, cap, chosen, func, mode, first_here=True)
        return result

    def _imap(
        self,
        kind: type[_Lazy],
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None,
        options: MapOptions,
    ) -> _Lazy:
        self._check_running()
        progress = options.pop("progress", None)
        chosen = self._options.override(options)
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        chunksize = chosen.chunksize_allowed(chunksize)
        total = len(iterable) if isinstance(iterable, Sized) else None
        # As with the standard library's default of one item a chunk, each item fails alone:
        # the chunks procpool picks run their items apart, and report each one's exception.
        each = chunksize in (None, 1)
        iterator = kind(
            self._control,
            self._imap_window(),
            chosen.return_exceptions,
            Progress.start(progress, total) if progress else None,
            each,
        )
        if each:
            if (
                chunksize == 1
                and self._items_marked
                and chosen.timeout is None
                and chosen.retries == 0
            ):
                # One call per item, each failing alone, does not need a task per item: several
                # travel in one, whose lost worker fails only the item it was calling. (A
                # timeout or retries apply to a task: there, each item stays a task.)
                chunksize = None
            chosen = dataclasses.replace(chosen, return_exceptions=True)
        self._start_feed(
            iterator, iterable, chunksize, IMAP_MAX_CHUNK, chosen, func, Mode.MAP, first_here=False
        )
        return iterator

    def _start_feed(
        self,
        sink: Any,
        iterable: Iterable[Any],
        chunksize: int | None,
        cap: int,
        options: Options,
        func: Any,
        mode: Mode,
        first_here: bool,
    ) -> None:
        """Feed a map-family call's input to the backend (see ``_feeding``); ``chunksize``
        None picks chunk sizes from the measured time per item, at most ``cap`` items."""
        try:
            function = self._dumps_callable(func)
        except Exception as exc:  # the function itself would not pickle
            sink._input_failed(0, exc)
            sink._set_length(1)
            return
        prepare = self._prepare(options, func, function)
        size = (
            fixed_size(chunksize)
            if chunksize is not None
            else ChunkSizer(
                lambda wait=0.0, until=0: self._backend.item_seconds(function, wait, until),
                cap,
                self._chunk_seconds,
                len(iterable) if isinstance(iterable, Sized) else None,
                self._processes,
                # A map's outcome is whole (one failed chunk fails it): it may wait for its
                # first measurement. An imap hands out each result: until measured, its items
                # go one a chunk, each failing alone, as with the standard library's imap.
                probe=first_here,
            )
        )
        self._control.add_feed(sink)
        feeder = Feeder(
            self._backend,
            sink,
            iterable,
            size,
            prepare,
            mode,
            lambda: self._control.feed_ended(sink),
        )
        feeder.start(first_in_caller=first_here)


class _Control:
    """The parts of a pool that its result objects and imap feeders share with it.

    Results may stop the whole pool (Ctrl-C while waiting) or cancel their own tasks; both go
    through here, and so does the record of imap inputs still being read: a closed pool's
    backend is told that no more tasks will come only once every one of them has ended. It
    holds no reference to the Pool, so a pool whose results are still held can be collected.
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._feeds: set[_LazyIterator[Any]] = set()
        self._lock = threading.Lock()
        self._closing = False  # close() was called: close the backend once the feeds end
        self.terminated = False

    def add_feed(self, iterator: _LazyIterator[Any]) -> None:
        with self._lock:
            self._feeds.add(iterator)

    def feed_ended(self, iterator: _LazyIterator[Any]) -> None:
        with self._lock:
            self._feeds.discard(iterator)
            last = self._closing and not self._feeds
        if last:
            self._backend.close()

    def cancel(self, sink: Any) -> bool:
        return self._backend.cancel(sink)

    def close(self) -> None:
        for iterator in self._live_feeds():
            # join() must not wait on a consumer that stopped reading: finish those inputs.
            iterator._unthrottle()
        with self._lock:
            self._closing = True
            ready = not self._feeds
        if ready:
            self._backend.close()

    def terminate(self) -> None:
        self.terminated = True
        for iterator in self._live_feeds():
            iterator._stop(PoolTerminatedError("the pool was terminated before reading this input"))
        self._backend.terminate()

    def _live_feeds(self) -> list[_LazyIterator[Any]]:
        with self._lock:
            return list(self._feeds)


def _block_stdlib_machinery(cls: type, base: type) -> None:
    """Make every method ``base`` defines and ``cls`` does not override raise.

    ``cls`` subclasses ``base`` for ``isinstance`` alone. An inherited method of the standard
    library's pool (``_handle_workers``, ``_maintain_pool``, ``_terminate_pool``...) would work on
    state procpool's pool does not have, or start the standard library's threads; any caller
    reaching one gets a clear ``NotImplementedError`` instead. Done once, at class creation, so
    that methods a newer Python adds to the base are covered too.
    """
    for name, value in vars(base).items():
        if name in vars(cls) or not isinstance(value, FunctionType | staticmethod | classmethod):
            continue
        setattr(cls, name, staticmethod(_blocked(f"{base.__module__}.{base.__qualname__}.{name}")))


def _blocked(qualname: str) -> Callable[..., NoReturn]:
    def blocked(*_: object, **__: object) -> NoReturn:
        raise NotImplementedError(
            f"{qualname} is the standard library's pool machinery, which procpool's pool "
            "does not use"
        )

    blocked.__name__ = blocked.__qualname__ = qualname.rpartition(".")[2]
    return blocked


_block_stdlib_machinery(Pool, multiprocessing.pool.Pool)
