"""What a caller holds while tasks run: ``ApplyResult``, ``MapResult`` and the imap iterators.

They are the backend's result sinks: the scheduler thread hands each one the still-pickled
outcome of its tasks (``_deliver``) or an error (``_fail``) and moves on. Unpickling happens
later, in the thread that asks for the value (``get()``, ``next()``) or on the callback thread, so
user ``__setstate__`` code never runs on the scheduler thread and a large result never delays it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from multiprocessing import TimeoutError
from typing import Any, Generic, Protocol, TypeVar

from . import _shm
from ._backend import wakes
from ._callbacks import CallbackRunner
from ._errors import (
    BrokenPoolError,
    PoolTerminatedError,
    TaskCancelledError,
    TaskDecodeError,
    attach_remote_traceback,
    attempts_note,
)
from ._progress import Progress
from ._protocol import RaisedItem, Status, decode_exception_parts
from ._serialize import decode_exception

__all__ = ["ApplyResult", "AsyncResult", "IMapIterator", "IMapUnorderedIterator", "MapResult"]

T = TypeVar("T")

# Chunks a feeder submits at a time once its iterator is no longer throttled.
_UNTHROTTLED_GROUP = 64
# A map's waiting caller is woken to unpickle what has arrived once this many pickled bytes
# wait (or the map is complete): fewer bytes cost less to unpickle than the wake-up.
_DECODE_AHEAD_BYTES = 64 * 1024

# An outcome still in its pickled form: unpickling it gives (success, value or exception).
_Decoder = Callable[[], tuple[bool, Any]]


# Errors that end a whole job, even one that returns its items' exceptions in place.
_JOB_ERRORS = (TaskCancelledError, PoolTerminatedError, BrokenPoolError)


class Control(Protocol):
    """What a result may ask of the pool's backend."""

    def terminate(self) -> None: ...

    def cancel(self, sink: Any) -> bool: ...


# What stands in a chunk's result list for an item that raised, made from its exception;
# None: the chunk fails as a whole, as the standard library's chunks do.
_StandIn = Callable[[BaseException], Any] | None


def _returned(error: BaseException) -> BaseException:
    """``return_exceptions``: the item's exception is its result."""
    return error


class _Raised:
    """Stands in an imap's items for one that raised: the consumer raises it at its turn and
    goes on with the next item, as the standard library's one-item chunks do."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _handed(item: Any) -> Any:
    """An imap's item as its consumer gets it: the value, or the item's exception raised."""
    if type(item) is _Raised:
        raise item.error
    return item


def _decoder(
    status: Status,
    payload: memoryview,
    attempts: Sequence[str] = (),
    stand_in: _StandIn = None,
    lent: _shm.Lent | None = None,
) -> _Decoder:
    """Unpickles an outcome when called. ``stand_in``: a result list may hold RaisedItems, each
    replaced by what it makes of the item's exception. ``lent``: the result's large buffers, in
    shared memory."""

    def decode() -> tuple[bool, Any]:
        if status is Status.OK:
            try:
                value = _shm.loads(payload, lent)
            except Exception as exc:
                undecodable = TaskDecodeError(f"the task's result could not be unpickled: {exc!r}")
                undecodable.__cause__ = exc
                return False, undecodable
            if stand_in is not None:
                value = [
                    stand_in(_noted(decode_exception(v.payload), attempts))
                    if isinstance(v, RaisedItem)
                    else v
                    for v in value
                ]
            return True, value
        error: BaseException
        if status is Status.ERROR:
            error = decode_exception(payload)
        else:
            _, tb_text, summary = decode_exception_parts(payload)
            error = attach_remote_traceback(
                TaskDecodeError(
                    "the task's function or arguments could not be unpickled in the worker: "
                    + summary
                ),
                tb_text,
            )
        if attempts:
            error.add_note(attempts_note(attempts))
        return False, error

    return decode


def _noted(error: BaseException, attempts: Sequence[str]) -> BaseException:
    if attempts:
        error.add_note(attempts_note(attempts))
    return error


def _failure(exc: BaseException) -> _Decoder:
    return lambda: (False, exc)


def _items_failed(
    decode: _Decoder, size: int, stand_in: Callable[[BaseException], Any]
) -> _Decoder:
    """A chunk whose items fail alone but that failed as a whole (its arguments would not
    unpickle, say): its exception stands in for each of its items."""

    def each() -> tuple[bool, Any]:
        success, value = decode()
        return (True, value) if success else (True, [stand_in(value)] * size)

    return each


def _chunk_outcome(
    status: Status,
    payload: memoryview,
    attempts: Sequence[str],
    stand_in: _StandIn,
    size: int,
    lent: _shm.Lent | None,
) -> _Decoder:
    decode = _decoder(status, payload, attempts, stand_in, lent)
    return decode if stand_in is None else _items_failed(decode, size, stand_in)


def _chunk_failure(exc: BaseException, stand_in: _StandIn, size: int) -> _Decoder:
    if stand_in is not None and not isinstance(exc, _JOB_ERRORS):
        return _items_failed(_failure(exc), size, stand_in)
    return _failure(exc)


class ApplyResult(Generic[T]):
    """The pending result of ``apply_async`` (the standard library's ``AsyncResult``)."""

    def __init__(
        self,
        callbacks: CallbackRunner,
        control: Control,
        callback: Callable[[T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> None:
        self._control = control
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._resolve_lock = threading.Lock()
        self._callbacks = callbacks
        self._callback = callback
        self._error_callback = error_callback
        self._completed = False  # an outcome arrived; later ones are ignored
        self._outcome: _Decoder | None = None
        self._success = False
        self._value: Any = None
        self._ready_hooks: list[Callable[[], object]] = []  # called once ready (see _when_ready)

    def __repr__(self) -> str:
        state = "ready" if self.ready() else "pending"
        return f"<{type(self).__module__}.{type(self).__qualname__} {state}>"

    def ready(self) -> bool:
        """Whether the call has finished (successfully or not)."""
        return self._event.is_set()

    def successful(self) -> bool:
        """Whether the call finished without raising; ``ValueError`` if it has not finished."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._resolve()[0]

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is ready or ``timeout`` seconds have passed.

        Ctrl-C while waiting stops the pool (its workers are killed) and the KeyboardInterrupt
        goes on to the caller.
        """
        try:
            self._event.wait(timeout)
        except KeyboardInterrupt:
            self._control.terminate()
            raise

    def cancel(self) -> bool:
        """Cancel the task: dropped if it has not started, stopped (its worker killed and
        replaced) if it runs. ``get()`` then raises :class:`procpool.TaskCancelledError`.
        False if it had already finished."""
        return not self.ready() and self._control.cancel(self)

    def get(self, timeout: float | None = None) -> T:
        """Return the result, or raise the task's exception (worker traceback as ``__cause__``).

        Raises ``multiprocessing.TimeoutError`` if it is not ready within ``timeout`` seconds;
        the task itself goes on (a pool ``task_timeout`` is what stops tasks).
        """
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError
        success, value = self._resolve()
        if success:
            return value  # type: ignore[no-any-return]
        raise value

    def __await__(self) -> Generator[Any, None, T]:
        """``await result`` in a coroutine: the event loop is woken when the result is ready,
        never blocked. Cancelling the awaiting task cancels the task (see :meth:`cancel`)."""
        from ._asyncio import result_of

        return result_of(self).__await__()

    def _when_ready(self, hook: Callable[[], object]) -> None:
        """Call ``hook()`` once the result is ready: now if it is, else from the thread that
        completes it (so ``hook`` must be quick and must not block)."""
        with self._lock:
            if not self._event.is_set():
                self._ready_hooks.append(hook)
                return
        hook()

    def _set_ready(self) -> None:
        with self._lock:
            self._event.set()
            hooks, self._ready_hooks = self._ready_hooks, []
        for hook in hooks:
            hook()

    # -- the sink side ------------------------------------------------------------------------

    def _deliver(
        self,
        index: int,
        status: Status,
        payload: memoryview,
        attempts: Sequence[str] = (),
        lent: _shm.Lent | None = None,
    ) -> None:
        self._complete(_decoder(status, payload, attempts, lent=lent))

    def _fail(self, index: int, exc: BaseException) -> None:
        self._complete(_failure(exc))

    def _complete(self, outcome: _Decoder) -> None:
        with self._lock:
            if self._completed:
                return
            self._completed = True
            self._outcome = outcome
        if self._callback is None and self._error_callback is None:
            self._set_ready()
        else:
            self._callbacks.post(self._run_callbacks)

    def _resolve(self) -> tuple[bool, Any]:
        # Unpickling happens once, under a lock of its own: the scheduler thread, which only
        # needs self._lock, never waits for it.
        with self._resolve_lock:
            with self._lock:
                outcome, self._outcome = self._outcome, None
            if outcome is not None:
                self._success, self._value = outcome()
            return self._success, self._value

    def _run_callbacks(self) -> None:
        # As in the standard library, the callback has run by the time get() returns.
        success, value = self._resolve()
        try:
            if success and self._callback is not None:
                self._callback(value)
            elif not success and self._error_callback is not None:
                self._error_callback(value)
        except BaseException as exc:
            # A callback that raises must not vanish: get() raises its exception.
            with self._resolve_lock:
                self._success, self._value = False, exc
        finally:
            self._set_ready()


AsyncResult = ApplyResult


class _Throttle:
    """How far a feeder may run ahead: at most ``window`` chunks submitted and not yet done
    (read by an imap's consumer; delivered, for a map). None: no bound. Every method is called
    with the owner's condition held; a throttled feeder waits on it and wakes once half the
    window is free, not once per chunk."""

    def __init__(self, cond: threading.Condition, window: int | None) -> None:
        self._cond = cond
        self.window = window
        self.submitted = 0
        self.done = 0
        self._waiting = False

    def reserve(self, stopped: Callable[[], bool]) -> int:
        """Chunks the feeder may submit now (waits while none may); 0 once ``stopped()``."""
        while not stopped() and self.window is not None and self.in_flight > self.window // 2:
            self._waiting = True
            self._cond.wait()
        self._waiting = False
        if stopped():
            return 0
        return _UNTHROTTLED_GROUP if self.window is None else self.window - self.in_flight

    @property
    def in_flight(self) -> int:
        return self.submitted - self.done

    def finished_one(self) -> None:
        self.done += 1
        if self._waiting and (self.window is None or self.in_flight <= self.window // 2):
            self._cond.notify_all()

    def unthrottle(self) -> None:
        self.window = None
        self._cond.notify_all()


class _FeederSide:
    """What a feeder (``_feeding.Feeder``) asks of the result object it fills: the window, the
    chunks' sizes, whether to stop. The owner provides ``_cond``, ``_sizes``, ``_throttle``."""

    _cond: threading.Condition
    _sizes: dict[int, int]  # chunk index -> items, as the feeder read them
    _throttle: _Throttle

    def _stopped(self) -> bool:
        raise NotImplementedError

    def _reserve(self) -> int:
        """How many chunks the feeder may submit now; 0 once it must stop."""
        with self._cond:
            return self._throttle.reserve(self._stopped)

    def _note_chunk(self, index: int, size: int) -> None:
        with self._cond:
            self._sizes[index] = size

    def _note_submitted(self, chunks: int) -> None:
        with self._cond:
            self._throttle.submitted += chunks

    def _unthrottle(self) -> None:
        with self._cond:
            self._throttle.unthrottle()


class MapResult(_FeederSide, ApplyResult[list[T]]):
    """The pending result of ``map_async``/``starmap_async``: one list, assembled from chunks.

    Like the standard library's, it fails as soon as any chunk fails; the other chunks still run.
    With ``return_exceptions``, a failed item's exception takes its place in the list instead.
    A caller waiting in ``wait()`` or ``get()`` without a timeout unpickles the chunks as they
    arrive, while the workers compute the others, rather than all of them once the last has
    come.
    """

    def __init__(
        self,
        callbacks: CallbackRunner,
        control: Control,
        length: int,
        callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        return_exceptions: bool = False,
        window: int | None = None,
        progress: Progress | None = None,
    ) -> None:
        """``length``: the items; a feeder submits them in chunks, at most ``window`` of them
        in flight at once. ``progress``: told the items of each chunk as it arrives."""
        super().__init__(callbacks, control, callback, error_callback)
        self._progress = progress
        self._stand_in: _StandIn = _returned if return_exceptions else None
        self._sizes: dict[int, int] = {}  # chunk index -> items, as the feeder read them
        self._chunks: dict[int, _Decoder] = {}
        self._count: int | None = None  # chunks in all, once the feeder has finished
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        self._throttle = _Throttle(self._cond, window)
        self._failed = False  # a chunk failed the whole map: the feeder stops
        self._undecoded: deque[int] = deque()  # chunks arrived and still pickled, in order
        self._undecoded_bytes = 0  # their pickled bytes since the waiter was last woken
        self._arrival = threading.Condition(lock)  # a chunk arrived, or the result is complete
        if not length:
            self._complete(lambda: (True, []))

    def _deliver(
        self,
        index: int,
        status: Status,
        payload: memoryview,
        attempts: Sequence[str] = (),
        lent: _shm.Lent | None = None,
    ) -> None:
        size = self._sizes.get(index, 1)
        outcome = _chunk_outcome(status, payload, attempts, self._stand_in, size, lent)
        if status is Status.OK or self._stand_in is not None:
            self._store(index, outcome, len(payload))
        else:
            self._fail_fast(outcome)

    def _fail(self, index: int, exc: BaseException) -> None:
        if self._stand_in is not None and not isinstance(exc, _JOB_ERRORS):
            self._store(index, _chunk_failure(exc, self._stand_in, self._sizes.get(index, 1)))
        else:
            self._fail_fast(_failure(exc))

    def _store(self, index: int, outcome: _Decoder, nbytes: int = 0) -> None:
        with self._cond:
            if self._completed:
                return
            self._chunks[index] = outcome
            self._undecoded.append(index)
            self._undecoded_bytes += nbytes
            if self._undecoded_bytes >= _DECODE_AHEAD_BYTES:
                self._undecoded_bytes = 0
                self._arrival.notify()
            self._throttle.finished_one()
            done = self._count == len(self._chunks)
        if self._progress is not None:
            self._progress.add(self._sizes.get(index, 1))
        if done:
            self._complete(self._assemble)

    def _complete(self, outcome: _Decoder) -> None:
        if self._progress is not None:
            self._progress.close()
        super()._complete(outcome)
        with self._cond:
            self._arrival.notify_all()  # a waiter unpickling chunks stops

    def wait(self, timeout: float | None = None) -> None:
        # Only an unbounded wait unpickles: one chunk may take long to, and a wait with a
        # timeout must end in time.
        if timeout is None:
            try:
                while not self._event.is_set() and self._decode_next():
                    pass
            except KeyboardInterrupt:
                self._control.terminate()
                raise
        super().wait(timeout)
        if self._progress is not None and self.ready():
            self._progress.join()  # the last report is out before the caller goes on

    def _decode_next(self) -> bool:
        """Unpickle the next chunk that has arrived, first waiting for one; False once none
        will come (the result is complete)."""
        with self._cond:
            while not self._undecoded:
                if self._completed:
                    return False
                self._arrival.wait()
            index = self._undecoded.popleft()
        # Under the lock that _resolve holds while it assembles the list: a chunk is unpickled
        # once, here or there.
        with self._resolve_lock:
            with self._cond:
                decode = self._chunks.get(index)
            if decode is None:
                return True  # the map failed meanwhile: its chunks are no longer wanted
            outcome = decode()
            with self._cond:
                if self._chunks.get(index) is decode:
                    self._chunks[index] = lambda: outcome
        return True

    def _fail_fast(self, outcome: _Decoder) -> None:
        with self._cond:
            if self._completed:
                return  # every chunk had arrived: the result stands
            self._chunks = {}  # the other chunks' results are no longer wanted
            self._undecoded.clear()
            self._failed = True
            self._cond.notify_all()  # the feeder stops
        self._complete(outcome)

    def _assemble(self) -> tuple[bool, Any]:
        values: list[T] = []
        for index in range(len(self._chunks)):
            success, value = self._chunks[index]()
            if not success:
                return False, value
            values.extend(value)
        self._chunks = {}
        return True, values

    # -- the feeder side ----------------------------------------------------------------------

    def _stopped(self) -> bool:
        return self._failed or self._completed

    def _input_failed(self, index: int, exc: BaseException) -> None:
        self._fail_fast(_failure(exc))

    def _set_length(self, chunks: int) -> None:
        with self._cond:
            self._count = chunks
            done = not self._completed and chunks == len(self._chunks)
        if done:
            self._complete(self._assemble)

    def _stop(self, error: BaseException) -> None:
        self._fail_fast(_failure(error))


class _LazyIterator(_FeederSide, Generic[T]):
    """What the two imap iterators share: chunked arrival, throttled feeding, timeouts.

    A feeder thread submits chunks; the consumer pulls items. While the pool runs, the feeder
    may run at most ``window`` chunks ahead of the consumer, so an imap over a huge input holds
    a bounded number of chunks in memory. ``close()`` lifts the bound, so that ``join()`` never
    waits on a consumer that has stopped reading.
    """

    def __init__(
        self,
        control: Control,
        window: int,
        return_exceptions: bool = False,
        progress: Progress | None = None,
        each: bool = False,
    ) -> None:
        """``each``: the chunks' items fail alone (an item that raised is raised at its turn,
        or returned with ``return_exceptions``), as in the standard library's one-item chunks;
        otherwise a chunk that raised raises once, in place of all its items."""
        self._control = control
        self._progress = progress
        self._arrivals = 0  # chunks delivered, failed or standing for a failed input
        self._stand_in: _StandIn = _returned if return_exceptions else _Raised if each else None
        self._sizes: dict[int, int] = {}  # chunk index -> items, as the feeder read them
        self._cond = threading.Condition(threading.Lock())
        self._consumer_lock = threading.Lock()
        self._items: deque[Any] = deque()  # results, and _Raised for items that raised
        self._length: int | None = None  # the number of chunks, once the feeder has finished
        self._throttle = _Throttle(self._cond, window)
        self._stop_error: BaseException | None = None
        self._change_hooks: list[Callable[[], object]] = []  # see _when_changed

    def __iter__(self) -> Iterator[T]:
        return self

    def __aiter__(self) -> AsyncIterator[T]:
        """``async for item in pool.imap(...)``: the event loop is woken as results arrive,
        never blocked. Cancelling the consuming task cancels the rest of the work."""
        from ._asyncio import LazyAsyncIterator

        return LazyAsyncIterator(self)

    def cancel(self) -> bool:
        """Cancel the rest of the work: the input is no longer read, tasks not started are
        dropped and running ones stopped; the iterator then raises
        :class:`procpool.TaskCancelledError` past the results that had arrived."""
        self._stop(TaskCancelledError("the imap was cancelled"))
        return self._control.cancel(self)

    def _when_changed(self, hook: Callable[[], object]) -> None:
        """Call ``hook()`` once, at the next arrival (or the end of the input, or a stop),
        from the thread that brings it: ``hook`` must be quick and must not block."""
        with self._cond:
            self._change_hooks.append(hook)

    def _changed(self) -> None:
        # (Called with self._cond held, by every sink-side change a consumer may wait for.)
        self._cond.notify_all()
        hooks, self._change_hooks = self._change_hooks, []
        for hook in hooks:
            hook()

    def __next__(self) -> T:
        # The items of the chunk unpickled last are this consumer's alone: no lock to take one
        # (a consumer holding the lock unpickles the next chunk only once they are all taken).
        if self._items:
            try:
                item = self._items.popleft()
            except IndexError:
                pass  # another consumer took the last one: wait as usual
            else:
                return _handed(item)  # type: ignore[no-any-return]
        return self.next()

    def next(self, timeout: float | None = None) -> T:
        """The next item; ``multiprocessing.TimeoutError`` if none arrives within ``timeout``.

        Ctrl-C while waiting stops the pool and the KeyboardInterrupt goes on to the caller.
        """
        try:
            return self._next(timeout)
        except KeyboardInterrupt:
            self._control.terminate()
            raise

    def _next(self, timeout: float | None) -> T:
        deadline = None if timeout is None else time.monotonic() + timeout
        # One consumer at a time, so that chunks unpickled outside self._cond (which the
        # scheduler thread needs to deliver) still come out in order.
        if not self._consumer_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError
        try:
            while True:
                try:
                    decode = self._next_chunk(deadline)
                except StopIteration:
                    if self._progress is not None:
                        self._progress.join()  # the last report is out before the loop ends
                    raise
                if decode is None:
                    return _handed(self._items.popleft())  # type: ignore[no-any-return]
                success, value = decode()
                if not success:
                    raise value
                self._items.extend(value)
        finally:
            self._consumer_lock.release()

    def _next_chunk(self, deadline: float | None) -> _Decoder | None:
        """None if an item is ready; else wait for the next chunk and return it, still pickled."""
        with self._cond:
            while not self._items:
                if self._length is not None and self._throttle.done >= self._length:
                    raise StopIteration
                decode = self._take()
                if decode is not None:
                    self._throttle.finished_one()
                    return decode
                if self._stop_error is not None and self._throttle.in_flight <= 0:
                    raise self._stop_error
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                self._cond.wait(remaining)
            return None

    def _take(self) -> _Decoder | None:
        """Remove and return the next chunk to hand out, if it has arrived."""
        raise NotImplementedError

    def _arrive(self, index: int, outcome: _Decoder) -> None:
        raise NotImplementedError

    # -- the sink side ------------------------------------------------------------------------

    def _deliver(
        self,
        index: int,
        status: Status,
        payload: memoryview,
        attempts: Sequence[str] = (),
        lent: _shm.Lent | None = None,
    ) -> None:
        with self._cond:
            size = self._sizes.pop(index, 1)
            outcome = _chunk_outcome(status, payload, attempts, self._stand_in, size, lent)
            self._arrive(index, outcome)
            self._counted(size)
            if not wakes.defer(self._wake):
                self._changed()

    def _wake(self) -> None:
        """Wake the consumer after a batch of deliveries (see ``_backend.HeldWakes``)."""
        with self._cond:
            self._changed()

    def _fail(self, index: int, exc: BaseException) -> None:
        with self._cond:
            size = self._sizes.pop(index, 1)
            self._arrive(index, _chunk_failure(exc, self._stand_in, size))
            self._counted(size)
            self._changed()

    def _input_failed(self, index: int, exc: BaseException) -> None:
        """The input itself raised while chunk ``index`` was read: the results end there."""
        with self._cond:
            self._arrive(index, _failure(exc))
            self._counted(0)
            self._changed()

    def _counted(self, items: int) -> None:
        """A chunk of ``items`` arrived (under self._cond): progress, closed after the last."""
        self._arrivals += 1
        if self._progress is not None:
            self._progress.add(items)
            if self._arrivals == self._length:
                self._progress.close()

    # -- the feeder side ----------------------------------------------------------------------

    def _stopped(self) -> bool:
        return self._stop_error is not None

    def _set_length(self, chunks: int) -> None:
        with self._cond:
            self._length = chunks
            if self._progress is not None and self._arrivals == chunks:
                self._progress.close()
            self._changed()

    def _stop(self, error: BaseException) -> None:
        """The pool ended: the feeder stops, and the consumer gets ``error`` past what arrived."""
        with self._cond:
            self._stop_error = error
            if self._progress is not None:
                self._progress.close()
            self._changed()


class IMapIterator(_LazyIterator[T]):
    """The iterator ``imap`` returns: results in input order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # _LazyIterator's arguments
        super().__init__(*args, **kwargs)
        self._arrived: dict[int, _Decoder] = {}

    def _take(self) -> _Decoder | None:
        return self._arrived.pop(self._throttle.done, None)

    def _arrive(self, index: int, outcome: _Decoder) -> None:
        self._arrived.setdefault(index, outcome)


class IMapUnorderedIterator(_LazyIterator[T]):
    """The iterator ``imap_unordered`` returns: results in completion order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # _LazyIterator's arguments
        super().__init__(*args, **kwargs)
        self._arrived: deque[_Decoder] = deque()

    def _take(self) -> _Decoder | None:
        return self._arrived.popleft() if self._arrived else None

    def _arrive(self, index: int, outcome: _Decoder) -> None:
        self._arrived.append(outcome)
