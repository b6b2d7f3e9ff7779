"""Per-task overhead: procpool against multiprocessing.Pool (and peers, where installed).

    python benchmarks/bench_overhead.py [--repeat 5] [--processes 2]

Each workload runs ``--repeat`` times per library, interleaved, on a warm pool (the pool is
created and its workers are started before timing). Prints the median wall time of each and its
ratio to ``multiprocessing.Pool`` (below 1.0: faster than the standard library). These machines
are shared and noisy: compare ratios from one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any

import procpool


def noop(x: int) -> int:
    return x


def apply_async_many(pool: Any, n: int) -> None:
    results = [pool.apply_async(noop, (i,)) for i in range(n)]
    for r in results:
        r.get()


def map_many(pool: Any, n: int) -> None:
    pool.map(noop, range(n))


def imap_chunk1(pool: Any, n: int) -> None:
    for _ in pool.imap(noop, range(n)):
        pass


WORKLOADS: dict[str, tuple[Callable[[Any, int], None], int]] = {
    "apply_async x5000": (apply_async_many, 5000),
    "map x200000 (auto chunks)": (map_many, 200_000),
    "imap x5000 (chunksize 1)": (imap_chunk1, 5000),
}


def pool_factories(processes: int) -> dict[str, Callable[[], Any]]:
    ctx = multiprocessing.get_context("forkserver")
    factories: dict[str, Callable[[], Any]] = {
        "multiprocessing.Pool": lambda: ctx.Pool(processes),
        "procpool.Pool": lambda: procpool.Pool(processes),
    }
    try:
        import billiard  # type: ignore[import-not-found]

        factories["billiard.Pool"] = lambda: billiard.Pool(processes)
    except ImportError:
        pass
    return factories


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    factories = pool_factories(args.processes)
    pools = {name: make() for name, make in factories.items()}
    try:
        for pool in pools.values():
            pool.map(noop, range(100))  # start every worker before timing
        print(f"{'workload':28} {'library':22} {'median s':>9} {'vs stdlib':>9}")
        for workload, (run, n) in WORKLOADS.items():
            times: dict[str, list[float]] = {name: [] for name in pools}
            for _ in range(args.repeat):
                for name, pool in pools.items():
                    start = time.perf_counter()
                    run(pool, n)
                    times[name].append(time.perf_counter() - start)
            base = statistics.median(times["multiprocessing.Pool"])
            for name, samples in times.items():
                median = statistics.median(samples)
                print(f"{workload:28} {name:22} {median:9.4f} {median / base:9.2f}")
    finally:
        for pool in pools.values():
            pool.close()
            pool.join()


if __name__ == "__main__":
    main()
