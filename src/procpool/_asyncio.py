"""asyncio's door: awaiting procpool's results without blocking the event loop.

No thread waits on behalf of a coroutine. A waiting coroutine parks on an asyncio future of its
loop; the result object calls a hook when its state changes, from whichever thread changes it
(the scheduler or the callback thread), and the hook only schedules the future's completion
with ``loop.call_soon_threadsafe``. The value is then taken without waiting (``get(0)``,
``next(timeout=0)``), on the loop. Cancelling the awaiting task cancels the work it waited for:
a task not started is dropped, a running one is stopped (its worker replaced).

Imported only when something is awaited, so ``import procpool`` does not import asyncio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from multiprocessing import TimeoutError
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from ._results import ApplyResult, _LazyIterator

__all__ = ["LazyAsyncIterator", "result_of"]

T = TypeVar("T")


async def result_of(result: ApplyResult[T]) -> T:
    """The value of ``result`` (or its exception), awaited."""
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
    def wake() -> None:
        try:
            loop.call_soon_threadsafe(_wake, waiter)
        except RuntimeError:
            pass  # the loop has closed: nobody waits any more

    return wake


def _wake(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(None)
