"""asyncio's door: awaiting procpool's results without blocking the event loop.

No thread waits on behalf of a coroutine. A waiting coroutine parks on an asyncio future of its
loop; the result object calls a hook when its state changes, from whichever thread changes it
(the scheduler or the callback thread), and the hook only hands the future to the loop's
:class:`_Waker`. The value is then taken without waiting (``get(0)``, ``next(timeout=0)``), on the
loop. The waker wakes the loop once for a burst of results (not once per result), and completes
at most ``_Waker.BATCH`` waiting futures per turn of the loop, so a burst of thousands of
results never holds the loop for more than a batch's worth of coroutine steps. Cancelling the
awaiting task cancels the work it waited for: a task not started is dropped, a running one is
stopped (its worker replaced).

Imported only when something is awaited, so ``import procpool`` does not import asyncio.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import Callable
from multiprocessing import TimeoutError
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from ._results import ApplyResult, _LazyIterator

__all__ = ["LazyAsyncIterator", "result_of"]

T = TypeVar("T")


async def result_of(result: ApplyResult[T]) -> T:
    """The value of ``result`` (or its exception), awaited."""
    if result.ready():  # no turn of the loop needed
        return result.get(0)
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    result._when_ready(_waker(loop, ready))
    await _cancelling_on_cancel(ready, result.cancel)
    return result.get(0)


class LazyAsyncIterator(Generic[T]):
    """``async for`` over an imap iterator."""

    def __init__(self, iterator: _LazyIterator[T]) -> None:
        self._iterator = iterator

    def __aiter__(self) -> LazyAsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        iterator = self._iterator
        loop = asyncio.get_running_loop()
        while True:
            try:
                return iterator.next(timeout=0)
            except TimeoutError:
                pass
            except StopIteration:
                raise StopAsyncIteration from None
            changed = loop.create_future()
            iterator._when_changed(_waker(loop, changed))
            # Something may have arrived between the first look and the hook: look again, so
            # that no wake-up is missed (a hook left behind is harmless: it fires once).
            try:
                return iterator.next(timeout=0)
            except TimeoutError:
                pass
            except StopIteration:
                raise StopAsyncIteration from None
            await _cancelling_on_cancel(changed, iterator.cancel)


async def _cancelling_on_cancel(waiter: asyncio.Future[Any], cancel: Callable[[], Any]) -> None:
    try:
        await waiter
    except asyncio.CancelledError:
        cancel()
        raise


def _waker(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[Any]) -> Callable[[], None]:
    """The hook for a result object: completes ``waiter`` on ``loop``, from any thread."""
    waker = _wakers.get(loop)
    if waker is None:
        waker = _wakers[loop] = _Waker(loop)
    return lambda: waker.wake(waiter)


class _Waker:
    """Completes one event loop's waiting futures on behalf of other threads, in batches."""

    BATCH = 64  # futures completed per turn of the loop

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._ready: deque[asyncio.Future[Any]] = deque()
        self._scheduled = False  # a drain is due on the loop

    def wake(self, waiter: asyncio.Future[Any]) -> None:
        """(Any thread) Complete ``waiter`` soon."""
        with self._lock:
            self._ready.append(waiter)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            pass  # the loop has closed: nobody waits any more

    def _drain(self) -> None:
        """(On the loop) Complete up to a batch; leave the rest for the loop's next turn, after
        whatever else is ready now."""
        for _ in range(self.BATCH):
            with self._lock:
                if not self._ready:
                    self._scheduled = False
                    return
                waiter = self._ready.popleft()
            if not waiter.done():
                waiter.set_result(None)
        self._loop.call_soon(self._drain)


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waker]
_wakers = weakref.WeakKeyDictionary()
