"""``procpool.ProcessPoolExecutor``: the ``concurrent.futures`` door to procpool's workers.

    submit()/map() ──PreparedTask──▶ _Dispatcher ──at most `window` at a time──▶ Backend
       (caller's thread: pickles)      (waiting deque:                      (the Pool's, same
                                        futures PENDING, cancellable)        scheduler thread)
    Future ◀──set_result / set_exception── callback thread ◀──_deliver/_fail── _FutureSink

The executor runs on a private :class:`procpool.Pool` and its backend, so it has every guarantee
the pool has: a worker that dies fails only its own future with :class:`WorkerLostError` (the
executor never becomes "broken" because of it), ``task_timeout``, ``retries``/``retry_on`` and
``max_memory_per_child``. As in the standard library, only a few more tasks than there are
workers are handed to the backend at once (their futures are then *running*); the others wait
here, *pending*, so that ``Future.cancel()`` and ``shutdown(cancel_futures=True)`` drop them
without the backend ever seeing them.

The futures are :class:`Future`, a ``concurrent.futures.Future`` whose ``cancel()`` also stops a
running task (the standard one returns False for it): the task's worker is killed and replaced,
and the future ends cancelled. ``concurrent.futures.wait``/``as_completed`` and
``asyncio.wrap_future`` work on them as on any future; ``await future`` works too.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, RUNNING
from concurrent.futures.process import _RemoteTraceback
from itertools import islice
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from ._backend import Backend, PreparedTask
from ._callbacks import CallbackRunner
from ._errors import BrokenPoolError, RemoteTraceback, TaskDecodeError
from ._feeding import chunks, fixed_size
from ._options import ExceptionTypes
from ._pool import Pool, _block_stdlib_machinery
from ._protocol import Mode, Status
from ._results import _Decoder, _decoder, _failure
from ._shm import Lent

__all__ = ["Future", "ProcessPoolExecutor"]

T = TypeVar("T")


class Future(concurrent.futures.Future[T]):
    """A ``concurrent.futures.Future`` whose :meth:`cancel` also stops a running task.

    Awaitable: ``await future`` in a coroutine (through ``asyncio.wrap_future``, so the event
    loop is woken by a callback, never blocked); cancelling the awaiting task cancels this
    future, which stops its task.
    """

    _stop: Callable[[], object] | None = None  # set by the executor once the task is handed over

    def cancel(self) -> bool:
        """Cancel the task: a pending one is dropped (as the standard library does); a running
        one is stopped, its worker killed and replaced. False only if it had finished."""
        with self._condition:
            running = self._state == RUNNING
            if running:
                # Claimed now: the outcome that the stopped task still reports is dropped.
                self._state = CANCELLED
                self._condition.notify_all()
        if not running:
            if not super().cancel():
                return False
        else:
            self._invoke_callbacks()  # type: ignore[attr-defined]
            if self._stop is not None:
                self._stop()
        # Wake wait() and as_completed() at once, not when the executor next looks at the task.
        self.set_running_or_notify_cancel()
        return True

    def set_running_or_notify_cancel(self) -> bool:
        with self._condition:  # re-entrant: the base class takes it again
            if self._state == CANCELLED_AND_NOTIFIED:
                return False
            return super().set_running_or_notify_cancel()

    def __await__(self) -> Generator[Any, None, T]:
        if not self.done():
            import asyncio

            return (yield from asyncio.wrap_future(self).__await__())
        return self.result()


class _Dispatcher:
    """Hands tasks to the backend, at most ``window`` unsettled at a time, in submission order.

    A task handed over has its future marked running; the rest wait here. Every method is
    thread-safe. Once closed and drained, it closes the pool, whose workers then finish.
    """

    def __init__(self, backend: Backend, window: int, pool: Pool) -> None:
        self._backend = backend
        self._window = window
        self._pool = pool
        self._lock = threading.Lock()
        self._waiting: deque[tuple[Future[Any], PreparedTask]] = deque()
        self._in_flight = 0
        self._closing = False
        self.drained = threading.Event()  # closed, and every task handed over
        self._released = False  # the callback thread was told to finish

    def add(self, future: Future[Any], task: PreparedTask) -> None:
        with self._lock:
            self._waiting.append((future, task))
        self._pump()

    def settled(self) -> None:
        """A task handed over has its outcome: make room for the next."""
        with self._lock:
            self._in_flight -= 1
        self._pump()

    def close(self, cancel_waiting: bool) -> None:
        with self._lock:
            self._closing = True
            dropped = list(self._waiting) if cancel_waiting else []
            if cancel_waiting:
                self._waiting.clear()
        for future, _ in dropped:
            future.cancel()
        self._pump()

    def fail_waiting(self, exc: BaseException) -> None:
        """Fail every waiting task with ``exc`` (the executor is broken)."""
        for future in self.drop_waiting():
            if future.set_running_or_notify_cancel():
                future.set_exception(exc)

    def drop_waiting(self) -> list[Future[Any]]:
        """Remove every waiting task (the pool is being terminated); their futures."""
        with self._lock:
            dropped, self._waiting = self._waiting, deque()
        return [future for future, _ in dropped]

    def _pump(self) -> None:
        handed: list[PreparedTask] = []
        with self._lock:
            while self._waiting and self._in_flight < self._window:
                future, task = self._waiting.popleft()
                if future.set_running_or_notify_cancel():
                    self._in_flight += 1
                    handed.append(task)
            drained = self._closing and not self._waiting
            # Nothing more will settle: the callback thread may go (whoever shut down).
            release = drained and self._in_flight == 0 and not self._released
            self._released = self._released or release
        if handed:
            self._backend.submit(handed)
        if drained and not self.drained.is_set():
            self.drained.set()
            self._pool.close()  # the workers leave once the work handed over is done
        if release:
            self._pool._callbacks.close()


class _FutureSink:
    """The result sink of one executor task: settles its future on the callback thread.

    Unpickling the outcome and running the future's done-callbacks (user code) happen there,
    never on the scheduler thread.
    """

    # (Weakly referable: the task core remembers cancelled sinks without keeping them alive.)
    __slots__ = ("__weakref__", "_executor_state", "_future", "_settled")

    def __init__(self, future: Future[Any], state: _ExecutorState) -> None:
        self._future = future
        self._executor_state = state
        self._settled = False

    def _deliver(
        self,
        index: int,
        status: Status,
        payload: memoryview,
        attempts: Sequence[str] = (),
        lent: Lent | None = None,
    ) -> None:
        self._post(_decoder(status, payload, attempts, lent=lent))

    def _fail(self, index: int, exc: BaseException) -> None:
        self._post(_failure(exc))

    def _post(self, outcome: _Decoder) -> None:
        try:
            self._executor_state.callbacks.post(lambda: self._settle(outcome))
        except RuntimeError as exc:  # no thread can start: the interpreter is finalizing
            broken = BrokenPoolError("the executor could not start its callback thread")
            broken.__cause__ = exc
            self._executor_state.broken = broken
            self._executor_state.dispatcher.fail_waiting(broken)
            self._settle(_failure(broken))

    def _settle(self, outcome: _Decoder) -> None:
        if self._settled:
            return
        self._settled = True
        try:
            if not self._future.cancelled():
                success, value = _decoded(outcome)
                if not success and isinstance(value, BrokenPoolError):
                    self._executor_state.broken = value
                _set(self._future, success, value)
        finally:
            # Nothing runs any more: drop the way to stop it (and the cycle future -> _stop ->
            # sink -> future, so a settled future is freed as soon as the caller drops it).
            self._future._stop = None
            self._executor_state.dispatcher.settled()


def _results(
    futures: deque[Future[list[T]]],
    more: Callable[[], Future[list[T]] | None] | None,
    deadline: float | None,
) -> Iterator[T]:
    """What ``map`` returns: each chunk's items in order; ``more`` submits the next chunk."""
    try:
        while futures:
            if more is not None and (submitted := more()) is not None:
                futures.append(submitted)
            future = futures.popleft()
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                values = future.result(remaining)
            finally:
                future.cancel()
            del future
            # Hand each item over without keeping it: a result the caller drops is freed.
            values.reverse()
            while values:
                yield values.pop()
    finally:
        for future in futures:
            future.cancel()


def _decoded(outcome: _Decoder) -> tuple[bool, Any]:
    """The outcome unpickled; what unpickling raised beyond ``Exception`` (a ``SystemExit``
    from a ``__reduce__``, say) fails the task too, instead of ending the callback thread."""
    try:
        success, value = outcome()
    except BaseException as exc:
        error = TaskDecodeError(f"the task's result could not be unpickled: {exc!r}")
        error.__cause__ = exc
        return False, error
    if not success and isinstance(value.__cause__, RemoteTraceback):
        # The worker's traceback, as the standard library's executor attaches it.
        value.__cause__ = _RemoteTraceback(value.__cause__.tb)
    return success, value


def _set(future: Future[Any], success: bool, value: Any) -> None:
    try:
        if success:
            future.set_result(value)
        else:
            future.set_exception(value)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled meanwhile: the outcome is no longer wanted


class _ExecutorState:
    """What the sinks share with the executor (never the executor itself, so that it can be
    collected while futures are alive, as the standard library's can)."""

    def __init__(self, pool: Pool, window: int) -> None:
        self.callbacks: CallbackRunner = pool._callbacks
        self.dispatcher = _Dispatcher(pool._backend, window, pool)
        self.broken: BaseException | None = None


class _Machinery:
    """An executor's background work, joinable like a thread (``join``) or a queue
    (``join_thread``): done once the executor was shut down and its pool has finished."""

    def __init__(self, dispatcher: _Dispatcher, pool: Pool) -> None:
        self._dispatcher = dispatcher
        self._pool = pool

    def join(self, timeout: float | None = None) -> None:
        if self._dispatcher.drained.wait(timeout):
            self._pool.join()

    join_thread = join

    def is_alive(self) -> bool:
        return not self._pool._backend.join(0)


class _ExitHook:
    """Waits, when the interpreter exits, for the work of every executor not shut down.

    The standard library's executor finishes the work submitted to it before the interpreter
    exits, even when nobody waits for it (a script that submits and ends); procpool's does the
    same. The hook runs in ``threading``'s exit step, before ``atexit`` and before
    ``multiprocessing``'s own exit handler, which terminates pools. Registered with the first
    executor, not at import.

    A forked child inherits the hook and the parent's executors (a forked worker runs the hook
    when it ends): only the executors made in the exiting process are finished, and a child
    that makes its own registers the hook for itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: weakref.WeakSet[ProcessPoolExecutor] = weakref.WeakSet()
        self._registered_in: int | None = None  # the pid that registered the hook

    def add(self, executor: ProcessPoolExecutor) -> None:
        with self._lock:
            self._live.add(executor)
            if self._registered_in != os.getpid():
                threading._register_atexit(self._finish)  # type: ignore[attr-defined]
                self._registered_in = os.getpid()

    def _finish(self) -> None:
        for executor in list(self._live):
            if executor._owner_pid == os.getpid():
                executor.shutdown(wait=True)


_exit_hook = _ExitHook()


class ProcessPoolExecutor(concurrent.futures.ProcessPoolExecutor):
    """``concurrent.futures.ProcessPoolExecutor``'s API on procpool's workers.

    It is a ``concurrent.futures.ProcessPoolExecutor`` for ``isinstance``; it never runs the
    standard library's machinery (its ``__init__`` is not called; its other methods raise).

    Differences, each deliberate: a worker that dies fails only the future of the task it ran,
    with :class:`procpool.WorkerLostError`, and the executor goes on (it is never "broken" by a
    death; only an initializer that fails breaks it, with :class:`procpool.InitializerError`);
    ``Future.cancel()`` stops a running task; all ``max_workers`` workers start with the
    executor; ``max_tasks_per_child`` works with every start method, fork included.

    Additions, as for :class:`procpool.Pool`: ``task_timeout`` (seconds a task may run before its
    worker is killed: :class:`procpool.TaskTimeoutError`), ``retries``/``retry_on`` and
    ``max_memory_per_child``; ``backend="dask"`` with ``address`` or ``client`` runs the tasks
    on a Dask cluster (``docs/dask.md``).
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        retry_on: ExceptionTypes | None = None,
        max_memory_per_child: int | None = None,
        backend: str | None = None,
        address: str | None = None,
        client: Any = None,
    ) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if max_tasks_per_child is not None and (
            not isinstance(max_tasks_per_child, int) or max_tasks_per_child <= 0
        ):
            raise ValueError("max_tasks_per_child must be >= 1")
        self._shutdown_thread = False
        self._shutdown_lock = threading.Lock()
        pool = Pool(
            max_workers,
            initializer,
            initargs,
            max_tasks_per_child,
            mp_context,
            task_timeout=task_timeout,
            retries=retries,
            retry_on=retry_on,
            max_memory_per_child=max_memory_per_child,
            backend=backend,
            address=address,
            client=client,
        )
        self._procpool = pool
        self._max_workers: int = pool._processes
        # (typeshed types these for the standard library's values; procpool's context and an
        # initializer returning anything are accepted just the same.)
        self._mp_context = pool._ctx  # type: ignore[assignment]
        self._initializer = initializer  # type: ignore[assignment]
        self._initargs = initargs
        self._max_tasks_per_child = max_tasks_per_child
        # As the standard library's call queue: a few tasks beyond one per worker are handed to
        # the backend, so a worker that finishes finds its next task there at once.
        self._shared = _ExecutorState(pool, 2 * self._max_workers)
        self._owner_pid = os.getpid()
        _exit_hook.add(self)

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown_thread else "running"
        return f"<procpool.ProcessPoolExecutor {state} max_workers={self._max_workers}>"

    # -- what the standard library's tests and tools look at --------------------------------

    @property
    def _processes(self) -> dict[int | None, BaseProcess]:  # type: ignore[override]
        """The worker processes alive now, by pid."""
        return {p.pid: p for p in self._procpool._pool}

    @property
    def _executor_manager_thread(self) -> _Machinery:  # type: ignore[override]
        """What to join to wait until a shut-down executor has released its workers and threads
        (the standard library's tests join its manager thread and call queue for that)."""
        return _Machinery(self._shared.dispatcher, self._procpool)

    _call_queue = _executor_manager_thread

    @property
    def _broken(self) -> BaseException | bool:  # type: ignore[override]
        """False, unless the initializer failed: worker deaths never break this executor."""
        return self._shared.broken or False

    # -- submitting work ------------------------------------------------------------------------

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)``; its :class:`Future` at once."""
        return self._submit(fn, Mode.APPLY, (args, kwargs))

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[T]:
        """``map(fn, *iterables)`` computed in the workers; results in order.

        ``chunksize`` items travel together; ``buffersize`` (as in Python 3.14) bounds how many
        chunks are submitted ahead of the consumer, so the input is read lazily. Abandoning the
        iterator (or a ``timeout``) cancels the chunks not yet consumed, stopping running ones.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None and (
            isinstance(buffersize, bool) or not isinstance(buffersize, int)
        ):
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        deadline = None if timeout is None else time.monotonic() + timeout
        chunked = chunks(zip(*iterables, strict=False), fixed_size(chunksize), keep_partial=False)
        futures: deque[Future[list[T]]] = deque(
            self._submit(fn, Mode.STARMAP, chunk) for chunk in islice(chunked, buffersize)
        )
        # The iterator holds the executor weakly (as the standard library's does), so an
        # executor dropped while its map is still read is collected, and shut down.
        executor = weakref.ref(self)

        def more() -> Future[list[T]] | None:
            alive = executor()
            chunk = next(chunked, None) if alive is not None else None
            return (
                None if chunk is None or alive is None else alive._submit(fn, Mode.STARMAP, chunk)
            )

        return _results(futures, more if buffersize else None, deadline)

    def _submit(self, fn: Callable[..., Any], mode: Mode, arguments: Any) -> Future[Any]:
        with self._shutdown_lock:
            if self._shared.broken is not None:
                raise BrokenPoolError(
                    "this executor's initializer failed; it cannot run tasks"
                ) from self._shared.broken
            if self._shutdown_thread:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: Future[Any] = Future()
            sink = _FutureSink(future, self._shared)
            try:
                prepare = self._procpool._prepare(self._procpool._options, fn)
                task = prepare(mode, arguments, sink, 0)
            except Exception as exc:  # unpicklable: the future fails, as the stdlib's does
                future.set_exception(exc)
                return future
            backend = self._procpool._backend
            future._stop = lambda: backend.cancel(sink)
            self._shared.dispatcher.add(future, task)
        return future

    # -- lifecycle ------------------------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions; with ``cancel_futures`` the pending futures are cancelled (the
        running ones finish). With ``wait``, returns once every worker has exited."""
        with self._shutdown_lock:
            self._shutdown_thread = True
        self._shared.dispatcher.close(cancel_futures)
        if wait:
            self._shared.dispatcher.drained.wait()
            self._procpool.join()

    def terminate_workers(self) -> None:
        """Stop now (Python 3.14's API): pending futures are cancelled, running ones fail with
        :class:`procpool.PoolTerminatedError`, every worker is killed."""
        with self._shutdown_lock:
            self._shutdown_thread = True
        for future in self._shared.dispatcher.drop_waiting():
            future.cancel()
        self._procpool.terminate()
        self._procpool.join()

    kill_workers = terminate_workers  # procpool kills its workers either way

    def __del__(self) -> None:
        # Unreferenced: nobody can submit any more; the work handed over finishes, as with the
        # standard library's executor (and the private pool does not warn about it).
        if not getattr(self, "_shutdown_thread", True):
            self.shutdown(wait=False)


_block_stdlib_machinery(ProcessPoolExecutor, concurrent.futures.ProcessPoolExecutor)
