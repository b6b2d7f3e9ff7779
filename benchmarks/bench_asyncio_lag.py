"""Event-loop lag while thousands of procpool tasks are submitted and awaited from asyncio.

    python benchmarks/bench_asyncio_lag.py [--tasks 5000] [--batch 100] [--workers 2]

A ticker coroutine asks to wake every millisecond; its lag is how late each wake-up comes. The
lag is measured during each scenario (and with no work at all, as the baseline):

* ``apply_async``: ``--tasks`` tasks, submitted ``--batch`` at a time, each batch awaited by a
  coroutine of its own; the submitter yields to the loop between batches (submission pickles in
  the caller's thread, so one synchronous loop of thousands of submissions, or one ``gather`` of
  thousands of awaitables, would itself hold the loop: that is the caller's lag, not procpool's);
* ``map_async``: one ``await pool.map_async`` over ``--tasks`` items;
* ``imap_unordered``: ``async for`` over ``--tasks`` items;
* ``run_in_executor``: ``--tasks`` calls through ``loop.run_in_executor(procpool executor)``,
  submitted in batches as above;
* ``faults``: as ``apply_async``, while one task in 100 kills its worker (``os._exit``) and
  one in 100 runs past its ``timeout`` (its worker is killed): the failures are awaited too.

Prints, per scenario, the lag's median, 99th percentile and maximum, in milliseconds, the wall
time, and the longest garbage collection the interpreter ran meanwhile (a full collection of
the thousands of objects in flight stalls every thread, the loop's included: the largest lags
coincide with it). The tasks are trivial, so the figures are the cost of the asyncio path.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import procpool

TICK = 0.001


def square(x: int) -> int:
    return x * x


def faulty(x: int) -> int:
    """Every 100th call kills its worker; every 100th (offset 50) outlives its timeout."""
    if x % 100 == 0:
        os._exit(1)
    if x % 100 == 50:
        time.sleep(5)
    return x


async def ticker(lags: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + TICK
        await asyncio.sleep(TICK)
        lags.append(max(0.0, loop.time() - due))


class GcWatch:
    """The longest garbage collection, in ms, while installed."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.longest = max(self.longest, (time.perf_counter() - self._started) * 1000)


async def measure(work: Callable[[], Awaitable[Any]]) -> tuple[list[float], float, float]:
    lags: list[float] = []
    stop = asyncio.Event()
    watch = GcWatch()
    gc.callbacks.append(watch)
    tick = asyncio.ensure_future(ticker(lags, stop))
    started = time.perf_counter()
    try:
        await work()
    finally:
        gc.callbacks.remove(watch)
    elapsed = time.perf_counter() - started
    stop.set()
    await tick
    return lags, elapsed, watch.longest


async def in_batches(submit: Callable[[int], Awaitable[Any]], tasks: int, batch: int) -> list[Any]:
    """Submit ``tasks`` awaitables, ``batch`` at a time, each batch awaited by a coroutine of its
    own; yield to the loop between batches; gather the batches."""
    batches = []
    for start in range(0, tasks, batch):
        submitted = [submit(i) for i in range(start, min(start + batch, tasks))]
        batches.append(asyncio.ensure_future(_await_each(submitted)))
        await asyncio.sleep(0)
    return await asyncio.gather(*batches)


async def _await_each(awaitables: list[Awaitable[Any]]) -> list[Any]:
    results = []
    for awaitable in awaitables:
        try:
            results.append(await awaitable)
        except Exception as exc:  # the faults scenario's failures are results too
            results.append(exc)
    return results


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


async def main(args: argparse.Namespace) -> None:
    n, batch = args.tasks, args.batch
    loop = asyncio.get_running_loop()
    with procpool.Pool(args.workers) as pool, procpool.ProcessPoolExecutor(args.workers) as ex:
        pool.map(square, range(args.workers * 4))  # workers warm
        ex.submit(square, 1).result()
        scenarios: dict[str, Callable[[], Awaitable[Any]]] = {
            "idle (baseline)": lambda: asyncio.sleep(0.5),
            "apply_async": lambda: in_batches(lambda i: pool.apply_async(square, (i,)), n, batch),
            "map_async": lambda: _await(pool.map_async(square, range(n))),
            "imap_unordered": lambda: _consume(pool.imap_unordered(square, range(n))),
            "run_in_executor": lambda: in_batches(
                lambda i: loop.run_in_executor(ex, square, i), n, batch
            ),
            "faults": lambda: in_batches(
                lambda i: pool.apply_async(faulty, (i,), timeout=0.2), n // 5, batch
            ),
        }
        print(f"{n} tasks, batches of {batch}, {args.workers} workers; lag in ms")
        header = f"{'scenario':<18}{'median':>8}{'p99':>8}{'max':>8}{'ticks':>7}{'wall s':>8}"
        print(header + f"{'gc max':>8}")
        for name, work in scenarios.items():
            lags, elapsed, longest_gc = await measure(work)
            ms = sorted(lag * 1000 for lag in lags)
            p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
            print(
                f"{name:<18}{statistics.median(ms):8.2f}{p99:8.2f}{ms[-1]:8.2f}"
                f"{len(ms):7d}{elapsed:8.2f}{longest_gc:8.2f}"
            )


async def _consume(iterator: Any) -> int:
    count = 0
    async for _ in iterator:
        count += 1
    return count


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--switch-interval", type=float, help="sys.setswitchinterval, in s")
    arguments = parser.parse_args()
    if arguments.switch_interval:
        sys.setswitchinterval(arguments.switch_interval)
    asyncio.run(main(arguments))
