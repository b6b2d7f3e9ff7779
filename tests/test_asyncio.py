"""asyncio: awaiting the Pool's results and the executor's futures without blocking the loop.

The fault tests make the Pool's checks (test_fault_tolerance.py): the error's type, the other
results intact, the pool still usable, no process left behind; and, here, that the event loop
kept running while the coroutine waited. They synchronise through :class:`_helpers.Rendezvous`
(its blocking ``accept`` runs in a thread, so the loop is free meanwhile), never by sleeping.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import procpool
from procpool import TaskTimeoutError, WorkerLostError

TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:  # workers find the helpers through sys.path (spawn copies it)
    sys.path.insert(0, TESTS_DIR)

from _helpers import Rendezvous, block, square, wait_gone  # noqa: E402
from _pools import WAIT, Audit, close_and_check  # noqa: E402

T = TypeVar("T")


def run(coroutine: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coroutine(), WAIT)

    return asyncio.run(bounded())


class Ticker:
    """Counts event-loop turns while a coroutine waits: a loop blocked by the wait would not
    count any."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0)

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def accept(rendezvous: Rendezvous) -> int:
    return await asyncio.to_thread(rendezvous.accept)


# -- the API -------------------------------------------------------------------------------------


def test_await_results_and_iterate_imap() -> None:
    async def main() -> list[Any]:
        with procpool.Pool(2) as pool:
            return [
                await pool.apply_async(square, (7,)),
                await pool.map_async(square, range(4)),
                await pool.starmap_async(pow, [(2, 3), (3, 2)]),
                [x async for x in pool.imap(square, range(5))],
                sorted([x async for x in pool.imap_unordered(square, range(5), chunksize=2)]),
            ]

    assert run(main) == [49, [0, 1, 4, 9], [8, 9], [0, 1, 4, 9, 16], [0, 1, 4, 9, 16]]


def test_an_awaited_task_raises_its_exception() -> None:
    async def main() -> None:
        with procpool.Pool(1) as pool:
            with pytest.raises(ValueError, match="invalid literal"):
                await pool.apply_async(int, ("x",))
            with pytest.raises(ValueError, match="invalid literal"):
                [x async for x in pool.imap(int, ["1", "x"])]

    run(main)


def test_executor_futures_and_run_in_executor() -> None:
    async def main() -> list[int]:
        with procpool.ProcessPoolExecutor(2) as executor:
            loop = asyncio.get_running_loop()
            return [
                await executor.submit(square, 3),
                await loop.run_in_executor(executor, square, 4),
                *await asyncio.gather(*(loop.run_in_executor(executor, square, i) for i in (5, 6))),
            ]

    assert run(main) == [9, 16, 25, 36]


def test_the_loop_runs_while_a_result_is_awaited(rendezvous: Rendezvous) -> None:
    async def main() -> tuple[str, int]:
        with procpool.Pool(1) as pool, Ticker() as ticker:
            result = pool.apply_async(block, (rendezvous.address, "done"))
            await accept(rendezvous)
            before = ticker.ticks
            waiter = asyncio.ensure_future(_awaited(result))
            await asyncio.sleep(0)
            while ticker.ticks < before + 100:  # the loop turns while the result is awaited
                await asyncio.sleep(0)
            assert not waiter.done()
            rendezvous.release_all()
            return await waiter, ticker.ticks - before

    value, ticks = run(main)
    assert value == "done"
    assert ticks >= 100


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


# -- faults (each start method) ----------------------------------------------------------------


def test_cancelling_the_awaiting_task_stops_the_running_work(
    method: str, rendezvous: Rendezvous, audit: Audit
) -> None:
    async def main() -> None:
        with procpool.Pool(2, context=procpool.get_context(method)) as pool:
            bystander = pool.apply_async(block, (rendezvous.address, "intact"))
            first = await accept(rendezvous)
            waiter = asyncio.ensure_future(_awaited(pool.apply_async(block, (rendezvous.address,))))
            victim = await accept(rendezvous)  # the other worker's pid
            assert victim != first
            audit.note(pool)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert not await asyncio.to_thread(wait_gone, {victim}, WAIT)  # stopped
            rendezvous.release_all()
            assert await bystander == "intact"
            assert await pool.apply_async(square, (6,)) == 36
            close_and_check(pool, audit)

    run(main)


def test_cancelling_an_async_for_stops_the_imap(
    method: str, rendezvous: Rendezvous, audit: Audit
) -> None:
    async def main() -> None:
        with procpool.Pool(1, context=procpool.get_context(method)) as pool:
            items = pool.imap(block, [rendezvous.address] * 3)

            async def consume() -> list[Any]:
                return [x async for x in items]

            consumer = asyncio.ensure_future(consume())
            pid = await accept(rendezvous)
            audit.note(pool)
            consumer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await consumer
            assert not await asyncio.to_thread(wait_gone, {pid}, WAIT)
            with pytest.raises(procpool.TaskCancelledError):
                next(items)
            assert await pool.apply_async(square, (2,)) == 4
            close_and_check(pool, audit)

    run(main)


@pytest.mark.parametrize("fault", ["sigkill", "timeout"])
def test_a_fault_while_awaited_fails_only_that_task(
    method: str, rendezvous: Rendezvous, audit: Audit, fault: str
) -> None:
    async def main() -> None:
        with procpool.ProcessPoolExecutor(
            2,
            mp_context=procpool.get_context(method),
            task_timeout=0.5 if fault == "timeout" else None,
        ) as executor:
            bystander = executor.submit(square, 5)
            assert await bystander == 25
            victim = executor.submit(block, rendezvous.address)
            pid = await accept(rendezvous)
            audit.workers |= {p for p in executor._processes if p is not None}
            if fault == "sigkill":
                os.kill(pid, signal.SIGKILL)
            expected = WorkerLostError if fault == "sigkill" else TaskTimeoutError
            with Ticker() as ticker:
                with pytest.raises(expected):
                    await victim
                # (a timeout of 0.5 s is plenty of turns; a death is seen at once, so no floor)
                assert fault == "sigkill" or ticker.ticks > 0
            assert await executor.submit(square, 6) == 36
            assert not await asyncio.to_thread(wait_gone, {pid}, WAIT)
        audit.check()

    run(main)
