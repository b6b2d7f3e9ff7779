"""The Dask backend against ``Client.map`` used directly, on the same LocalCluster.

    python benchmarks/bench_dask.py [--workers 2] [--repeat 5] [--tiny 20000] [--medium 400]

Workloads: tiny tasks (a no-op per item) and 10 ms tasks (a sleep per item). Each runs
``--repeat`` times per contender, interleaved, on one warm cluster (``--workers`` processes, one
thread each, on 127.0.0.1):

* ``Client.map``: ``client.gather(client.map(f, items, pure=False))``, one Dask task per item
  (Dask has no chunking of its own);
* ``procpool (auto chunks)``: ``Pool(client=client).map(f, items)``, chunks sized from the
  measured time per item;
* ``procpool chunksize=N``: the same with the caller's chunk size;
* ``procpool chunksize=1``: one Dask task per item, as ``Client.map``.

Prints the median wall time of each, and its ratio to ``Client.map`` (below 1.0: faster). The
machines these run on are shared and noisy: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import procpool


def noop(x: int) -> int:
    return x


def sleep_10ms(x: int) -> int:
    time.sleep(0.01)
    return x


def client_map(client: Any, func: Callable[[int], int], n: int) -> None:
    client.gather(client.map(func, range(n), pure=False))


def contenders(
    client: Any, pool: procpool.Pool, chunk: int
) -> dict[str, Callable[[Callable[[int], int], int], None]]:
    return {
        "Client.map": lambda func, n: client_map(client, func, n),
        "procpool (auto chunks)": lambda func, n: pool.map(func, range(n)),
        f"procpool chunksize={chunk}": lambda func, n: pool.map(func, range(n), chunk),
        "procpool chunksize=1": lambda func, n: pool.map(func, range(n), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tiny", type=int, default=20_000, help="items of the tiny workload")
    parser.add_argument("--medium", type=int, default=400, help="items of the 10 ms workload")
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    workloads = [
        (f"tiny x{args.tiny}", noop, args.tiny, max(1, args.tiny // (4 * args.workers))),
        (f"10 ms x{args.medium}", sleep_10ms, args.medium, 4),
    ]
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
        procpool.Pool(client=client) as pool,
    ):
        # Warm up: both paths import and unpickle what they need on every worker.
        client_map(client, noop, 100)
        pool.map(noop, range(100))
        for name, func, n, chunk in workloads:
            runs = contenders(client, pool, chunk)
            times: dict[str, list[float]] = {label: [] for label in runs}
            for _ in range(args.repeat):
                for label, run in runs.items():
                    started = time.perf_counter()
                    run(func, n)
                    times[label].append(time.perf_counter() - started)
            base = statistics.median(times["Client.map"])
            print(f"\n{name} ({args.workers} workers, median of {args.repeat})")
            for label, samples in times.items():
                median = statistics.median(samples)
                per_task = median / n * 1e6
                print(
                    f"  {label:28} {median * 1e3:9.1f} ms  {per_task:8.1f} us/item  "
                    f"x{median / base:5.2f}"
                )


if __name__ == "__main__":
    main()
