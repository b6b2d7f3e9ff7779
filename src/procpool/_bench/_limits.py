"""The machine's own limits, for the table's last column: what no pool can beat here.

Measured in the suite's parent before any sample starts: one core calling the tiny task, a pipe
round trip between two processes, a memory copy, and a fork, exit and wait.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings

import bench_tasks
from bench_workloads import Sizes, fastest


def fork() -> int:
    """``os.fork``, quiet about threads (Python 3.12+ warns): these children only read, write
    and exit, so no lock another thread held can stop them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def square_calls_per_second(n: int) -> float:
    """How fast one core calls the tiny task, with no pool around it."""
    return n / fastest(lambda: list(map(bench_tasks.square, range(n))))


def pipe_round_trip_seconds(trips: int) -> float:
    """One byte to a child process and back through two pipes, median of ``trips``."""
    from_parent, to_child = os.pipe()
    from_child, to_parent = os.pipe()
    pid = fork()
    if pid == 0:  # the child echoes until the parent closes its end
        os.close(to_child)
        os.close(from_child)
        while byte := os.read(from_parent, 1):
            os.write(to_parent, byte)
        os._exit(0)
    os.close(from_parent)
    os.close(to_parent)
    samples = []
    for _ in range(trips):
        start = time.perf_counter()
        os.write(to_child, b"x")
        os.read(from_child, 1)
        samples.append(time.perf_counter() - start)
    os.close(to_child)
    os.close(from_child)
    os.waitpid(pid, 0)
    return statistics.median(samples)


def copy_bytes_per_second(megabytes: int) -> float:
    """One memory copy of a large buffer (already faulted in), on one core."""
    source, target = bytearray(megabytes * 1_000_000), bytearray(megabytes * 1_000_000)
    target[:] = source  # fault every page in first

    def copy() -> None:
        target[:] = source

    return len(source) / fastest(copy)


def fork_wait_seconds(repeat: int) -> float:
    """Fork a child that exits at once, and wait for it: median of ``repeat``."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        pid = fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def machine_limits(sizes: Sizes, quick: bool) -> dict[str, str]:
    """Per metric key, the machine's limit in words; ``quick`` measures a tenth as long."""
    scale = 10 if quick else 1
    calls = f"one core calls square {square_calls_per_second(1_000_000 // scale) / 1e6:.1f} M/s"
    trip = f"pipe round trip {pipe_round_trip_seconds(2000 // scale) * 1e6:.0f} µs"
    copy = f"one memory copy {copy_bytes_per_second(256 // scale) / 1e9:.1f} GB/s"
    fork = f"fork + exit + wait {fork_wait_seconds(20 // scale) * 1e3:.1f} ms"
    return {
        "map_tiny": calls,
        "imap_chunk1": trip,
        "apply_serial": trip,
        "even_efficiency": "1.0",
        "skewed_efficiency": "1.0",
        "mixed_efficiency": "1.0",
        "array_args_gbps": copy,
        "array_results_gbps": copy,
        "big_array_gbps": f"{copy} (each way)",
        "startup_s": fork,
        "startup_scipy_s": fork,
        "gen_pulled": f"{sizes.gen_read:,} (what was read)",
        "gen_rss_mb": "0",
    }
