"""The workloads: what each one runs, what it reports, in which unit, and which way is better.

Every library gets the same inputs: the sizes (and the CPU-work calibration) come from the
suite's parent process, and the skewed and mixed task lists come from fixed seeds. Each workload
runs on a pool whose workers have already started (and imported numpy, where arrays travel),
except the start-up workloads, which time exactly that.
"""

from __future__ import annotations

import math
import pickle
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import bench_tasks
from bench_libraries import Adapter, Library

MB = 1_000_000


@dataclass(frozen=True)
class Sizes:
    """How big each workload is; ``iters_per_ms`` calibrates ``spin`` to this machine."""

    map_items: int
    imap_items: int
    apply_calls: int
    even_tasks: int
    even_ms: float
    skewed_tasks: int
    skewed_long: int
    skewed_ms: float
    mixed_tasks: int
    mixed_ms_min: float
    mixed_ms_max: float
    dict_tasks: int
    dict_entries: int
    str_tasks: int
    str_mb: int
    array_tasks: int
    array_mb: int
    big_mb: int
    gen_items: int
    gen_read: int
    iters_per_ms: float = 0.0

    def labels(self) -> dict[str, Any]:
        """The fields by name, for the metric labels."""
        return asdict(self)


# The sizes: what the published table is measured with.
FULL = Sizes(
    map_items=200_000,
    imap_items=5_000,
    apply_calls=2_000,
    even_tasks=400,
    even_ms=5.0,
    skewed_tasks=400,
    skewed_long=4,
    skewed_ms=1.0,
    mixed_tasks=400,
    mixed_ms_min=0.1,
    mixed_ms_max=20.0,
    dict_tasks=20,
    dict_entries=100_000,
    str_tasks=20,
    str_mb=16,
    array_tasks=40,
    array_mb=32,
    big_mb=1024,
    gen_items=2_000_000,
    gen_read=1_000,
)

# A few seconds in all: every workload runs, on sizes too small for figures worth quoting.
QUICK = Sizes(
    map_items=20_000,
    imap_items=300,
    apply_calls=200,
    even_tasks=40,
    even_ms=2.0,
    skewed_tasks=40,
    skewed_long=2,
    skewed_ms=0.2,
    mixed_tasks=40,
    mixed_ms_min=0.1,
    mixed_ms_max=4.0,
    dict_tasks=4,
    dict_entries=10_000,
    str_tasks=4,
    str_mb=1,
    array_tasks=4,
    array_mb=1,
    big_mb=0,
    gen_items=200_000,
    gen_read=100,
)


@dataclass(frozen=True)
class Metric:
    """One row of the table: ``label`` is formatted with the sizes' fields; ratios count a
    value below ``floor`` (the metric's noise) as ``floor``."""

    key: str
    label: str
    unit: str
    higher_is_better: bool
    floor: float = 0.0
    # Issue 6's targets for procpool: at least this ratio to the standard library (1.0: the
    # promise to be faster on every workload) and, where it names one, a bound on the value.
    target_ratio: float = 1.0
    target_value: float | None = None


@dataclass
class Context:
    """What a workload's ``measure`` gets: the library, the sizes and, if warmed, its pool."""

    library: Library
    sizes: Sizes
    processes: int
    pool: Adapter | None = None
    start_method: str = ""

    def new_pool(self) -> Adapter:
        """Start the library's pool with its default settings; note its start method."""
        pool = self.library.make(self.processes)
        self.start_method = pool.start_method
        return pool

    @property
    def warm(self) -> Adapter:
        """The pool the suite started and warmed for this workload."""
        assert self.pool is not None, "a start-up workload makes its own pool"
        return self.pool


Measure = Callable[[Context], dict[str, float]]


@dataclass(frozen=True)
class Workload:
    """A measurement: ``measure`` returns its metrics by key (and any details worth keeping).

    ``warm_up`` is the task that starts every worker before the timing (None: the workload times
    the pool's start itself); ``needs`` are the modules it cannot run without; ``skip`` names the
    size that, at zero, leaves it out; ``ends_pool`` says ``measure`` stops the pool itself;
    ``max_repetitions`` caps the samples of a workload too long to repeat; ``script`` is the
    main script of its process.
    """

    key: str
    metrics: tuple[Metric, ...]
    measure: Measure
    warm_up: Callable[[float], float] | None = bench_tasks.nap
    needs: tuple[str, ...] = ()
    skip: str | None = None
    ends_pool: bool = False
    max_repetitions: int | None = None
    script: str = "bench_main.py"
    notes: dict[str, str] = field(default_factory=dict)


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``call`` took, and what it returned."""
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def check(condition: bool, what: str) -> None:
    """A wrong answer makes the run an error, never a figure."""
    if not condition:
        raise RuntimeError(f"wrong result: {what}")


def map_tiny(ctx: Context) -> dict[str, float]:
    """Millions of tiny tasks a second through ``map`` with the library's default chunking."""
    n = ctx.sizes.map_items
    seconds, results = timed(lambda: ctx.warm.map(bench_tasks.square, range(n)))
    check(len(results) == n and results[-1] == (n - 1) ** 2, "map of squares")
    return {"map_tiny": n / seconds / 1e6}


def imap_chunk1(ctx: Context) -> dict[str, float]:
    """Microseconds a tiny task through ``imap`` with ``chunksize=1``: one call, one result each."""
    n = ctx.sizes.imap_items
    seconds, total = timed(lambda: sum(ctx.warm.imap(bench_tasks.square, range(n), 1)))
    check(total == sum(i * i for i in range(n)), "imap of squares")
    return {"imap_chunk1": seconds / n * 1e6}


def apply_serial(ctx: Context) -> dict[str, float]:
    """Microseconds a call of ``apply_async(...).get()``, each waited for before the next: the
    latency of one task."""
    n = ctx.sizes.apply_calls
    seconds, total = timed(lambda: sum(ctx.warm.apply(bench_tasks.square, i) for i in range(n)))
    check(total == sum(i * i for i in range(n)), "applied squares")
    return {"apply_serial": seconds / n * 1e6}


def fastest(call: Callable[[], Any], repeat: int = 7) -> float:
    """Seconds of the fastest of ``repeat`` calls: the least disturbed by other processes."""
    return min(timed(call)[0] for _ in range(repeat))


def seconds_per_iteration(iters_per_ms: float) -> float:
    """How long one ``spin`` iteration takes alone here, now: the fastest of 7 tasks of ~5 ms
    (so that the ideal time is not flattered by a disturbed measurement)."""
    iterations = round(5 * iters_per_ms)
    return fastest(lambda: bench_tasks.spin(iterations)) / iterations


def efficiency(ctx: Context, durations_ms: list[float], key: str) -> dict[str, float]:
    """Parallel efficiency of ``map`` over CPU tasks: the ideal time over the measured time.

    The ideal is the tasks' total time alone divided among the workers, or the longest task if
    that is longer; the time alone is measured in this process just before the pool runs them.
    """
    iterations = [max(1, round(ms * ctx.sizes.iters_per_ms)) for ms in durations_ms]
    per_iteration = seconds_per_iteration(ctx.sizes.iters_per_ms)
    seconds, _ = timed(lambda: ctx.warm.map(bench_tasks.spin, iterations))
    work = sum(iterations) * per_iteration
    ideal = max(work / ctx.processes, max(iterations) * per_iteration)
    return {key: ideal / seconds, f"{key}_work_s": work, f"{key}_seconds": seconds}


def even_tasks(ctx: Context) -> dict[str, float]:
    """Efficiency of ``map`` over equal CPU tasks (busy work, not sleep)."""
    s = ctx.sizes
    return efficiency(ctx, [s.even_ms] * s.even_tasks, "even_efficiency")


def skewed_durations(sizes: Sizes) -> list[float]:
    """Short tasks, and ``skewed_long`` of them 100 times longer at seeded random places."""
    long = set(random.Random(6).sample(range(sizes.skewed_tasks), sizes.skewed_long))
    return [sizes.skewed_ms * (100 if i in long else 1) for i in range(sizes.skewed_tasks)]


def skewed_tasks(ctx: Context) -> dict[str, float]:
    """Efficiency of ``map`` when a few tasks take 100 times the rest: does a long task strand
    the work queued behind it?"""
    return efficiency(ctx, skewed_durations(ctx.sizes), "skewed_efficiency")


def mixed_durations(sizes: Sizes) -> list[float]:
    """Durations spread evenly on a log scale between the bounds (seeded)."""
    rng = random.Random(7)
    low, high = math.log(sizes.mixed_ms_min), math.log(sizes.mixed_ms_max)
    return [math.exp(rng.uniform(low, high)) for _ in range(sizes.mixed_tasks)]


def mixed_tasks(ctx: Context) -> dict[str, float]:
    """Efficiency of ``map`` over CPU tasks of durations spread over two orders of magnitude."""
    return efficiency(ctx, mixed_durations(ctx.sizes), "mixed_efficiency")


def round_trips(ctx: Context, payloads: list[Any], key: str) -> dict[str, float]:
    """MB/s of pickled payload moved, both ways: each task echoes its payload.

    Every payload is a distinct object, down to its strings: the same object twice in one
    pickled batch would travel once (pickle's memo) and flatter the libraries that batch.
    """
    size = sum(len(pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL)) for p in payloads)
    seconds, results = timed(lambda: ctx.warm.map(bench_tasks.identity, payloads))
    check(results == payloads, "echoed payloads")
    return {key: 2 * size / seconds / MB, f"{key}_pickled_bytes": size}


def dict_payload(ctx: Context) -> dict[str, float]:
    """MB/s of big dicts of short strings echoed by tasks (pickling-bound)."""
    s = ctx.sizes
    payloads = [{f"{t}key{i:07d}": i for i in range(s.dict_entries)} for t in range(s.dict_tasks)]
    return round_trips(ctx, payloads, "dict_mbps")


def str_payload(ctx: Context) -> dict[str, float]:
    """MB/s of big non-ASCII strings echoed by tasks."""
    text = "procpool, déjà vu: "  # not ASCII, so pickling encodes for real
    body = (text * (ctx.sizes.str_mb * MB // len(text) + 1))[: ctx.sizes.str_mb * MB]
    return round_trips(ctx, [f"{t}{body}" for t in range(ctx.sizes.str_tasks)], "str_mbps")


def new_array(megabytes: int, fill: int = 3) -> Any:
    import numpy

    return numpy.full(megabytes * MB, fill, dtype=numpy.uint8)


def array_args(ctx: Context) -> dict[str, float]:
    """GB/s of arrays given to tasks, a distinct array each (see ``round_trips``); each task
    reads one byte per page of its array."""
    arrays = [new_array(ctx.sizes.array_mb, t % 251) for t in range(ctx.sizes.array_tasks)]
    expected = [bench_tasks.array_probe(array) for array in arrays]
    seconds, results = timed(lambda: ctx.warm.map(bench_tasks.array_probe, arrays))
    check(results == expected, "array probes")
    return {"array_args_gbps": sum(a.nbytes for a in arrays) / seconds / 1e9}


def array_results(ctx: Context) -> dict[str, float]:
    """GB/s of arrays made by tasks and returned to the caller."""
    nbytes, count = ctx.sizes.array_mb * MB, ctx.sizes.array_tasks
    seconds, results = timed(lambda: ctx.warm.map(bench_tasks.make_array, [nbytes] * count))
    check(len(results) == count and all(r.nbytes == nbytes for r in results), "made arrays")
    return {"array_results_gbps": count * nbytes / seconds / 1e9}


def big_array(ctx: Context) -> dict[str, float]:
    """GB/s of one very large array sent to a task and sent back."""
    array = new_array(ctx.sizes.big_mb)
    seconds, result = timed(lambda: ctx.warm.apply(bench_tasks.identity, array))
    check(result.nbytes == array.nbytes and int(result[-1]) == 3, "echoed big array")
    return {"big_array_gbps": 2 * array.nbytes / seconds / 1e9}


def start_one_close(ctx: Context, task: Callable[[int], int]) -> dict[str, float]:
    """Seconds from no pool to a pool that ran one task and is closed, its workers joined.

    The library is imported before the clock starts, as a program imports it at its top; the
    import's time is kept as a detail.
    """
    imported, _ = timed(ctx.library.load)
    start = time.perf_counter()
    pool = ctx.new_pool()
    check(pool.apply(task, 3) == 9, "first task")
    pool.close()
    return {"startup_s": time.perf_counter() - start, "import_s": imported}


def startup(ctx: Context) -> dict[str, float]:
    """Start-up with the tiny task, from a script that imports nothing heavy."""
    return start_one_close(ctx, bench_tasks.square)


def startup_scipy(ctx: Context) -> dict[str, float]:
    """Start-up from a script that imports numpy and scipy.optimize, with a task from a module
    that imports them too: what scientific programs pay."""
    import bench_heavy  # imported by the main script (bench_main_scipy.py) before the clock

    result = start_one_close(ctx, bench_heavy.heavy_square)
    return {"startup_scipy_s": result.pop("startup_s"), **result}


def resident_bytes() -> int:
    """This process's resident memory (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def generator_stop(ctx: Context) -> dict[str, float]:
    """Read the first results of an ``imap`` over a long generator, then stop: how much input
    the pool had pulled by then, and how much the parent's memory had grown.

    Then terminates the pool: closing it would wait for the whole input.
    """
    pulled = 0

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(ctx.sizes.gen_items):
            pulled += 1
            yield i

    before = resident_bytes()
    results = ctx.warm.imap_lazy(bench_tasks.square, items())
    read = [next(results) for _ in range(ctx.sizes.gen_read)]
    taken, grown = pulled, resident_bytes() - before
    ctx.warm.terminate()
    check(read[-1] == (ctx.sizes.gen_read - 1) ** 2, "imap over a generator")
    return {"gen_pulled": taken, "gen_rss_mb": grown / MB}


EXECUTOR_MAP = "executors: map(chunksize=1)"

WORKLOADS: dict[str, Workload] = {
    w.key: w
    for w in (
        Workload(
            "map_tiny",
            (
                Metric(
                    "map_tiny",
                    "map(square, range({map_items:,})), default chunking",
                    "M tasks/s",
                    True,
                    target_ratio=1.5,
                ),
            ),
            map_tiny,
        ),
        Workload(
            "imap_chunk1",
            (
                Metric(
                    "imap_chunk1",
                    "imap(square, range({imap_items:,}), chunksize=1)",
                    "µs a task",
                    False,
                    target_ratio=3.0,
                    target_value=5.0,
                ),
            ),
            imap_chunk1,
            notes={"concurrent.futures": EXECUTOR_MAP, "loky": EXECUTOR_MAP},
        ),
        Workload(
            "apply_serial",
            (
                Metric(
                    "apply_serial",
                    "apply_async(square, (i,)).get() one after another, {apply_calls:,} calls",
                    "µs a call",
                    False,
                    target_ratio=2.0,
                ),
            ),
            apply_serial,
            notes={"concurrent.futures": "submit().result()", "loky": "submit().result()"},
        ),
        Workload(
            "even",
            (
                Metric(
                    "even_efficiency",
                    "{even_tasks} CPU tasks of {even_ms:g} ms: parallel efficiency",
                    "ideal/measured",
                    True,
                    target_value=0.97,
                ),
            ),
            even_tasks,
        ),
        Workload(
            "skewed",
            (
                Metric(
                    "skewed_efficiency",
                    "{skewed_tasks} CPU tasks of {skewed_ms:g} ms, "
                    "{skewed_long} of them 100x longer: efficiency",
                    "ideal/measured",
                    True,
                    target_value=0.95,
                ),
            ),
            skewed_tasks,
        ),
        Workload(
            "mixed",
            (
                Metric(
                    "mixed_efficiency",
                    "{mixed_tasks} CPU tasks of {mixed_ms_min:g}-"
                    "{mixed_ms_max:g} ms (log-uniform): efficiency",
                    "ideal/measured",
                    True,
                ),
            ),
            mixed_tasks,
        ),
        Workload(
            "dict",
            (
                Metric(
                    "dict_mbps",
                    "{dict_tasks} tasks each given and returning a dict of "
                    "{dict_entries:,} str→int",
                    "MB/s",
                    True,
                ),
            ),
            dict_payload,
        ),
        Workload(
            "str",
            (
                Metric(
                    "str_mbps",
                    "{str_tasks} tasks each given and returning a {str_mb} MB str",
                    "MB/s",
                    True,
                ),
            ),
            str_payload,
        ),
        Workload(
            "array_args",
            (
                Metric(
                    "array_args_gbps",
                    "{array_tasks} tasks each given a {array_mb} MB numpy array",
                    "GB/s",
                    True,
                    target_ratio=5.0,
                ),
            ),
            array_args,
            warm_up=bench_tasks.warm_numpy,
            needs=("numpy",),
        ),
        Workload(
            "array_results",
            (
                Metric(
                    "array_results_gbps",
                    "{array_tasks} tasks each returning a {array_mb} MB numpy array",
                    "GB/s",
                    True,
                    target_ratio=5.0,
                ),
            ),
            array_results,
            warm_up=bench_tasks.warm_numpy,
            needs=("numpy",),
        ),
        Workload(
            "big_array",
            (
                Metric(
                    "big_array_gbps",
                    "one {big_mb:,} MB numpy array given to a task and returned",
                    "GB/s",
                    True,
                ),
            ),
            big_array,
            warm_up=bench_tasks.warm_numpy,
            needs=("numpy",),
            skip="big_mb",
            # 2 GB through the pipe takes seconds per library: one sample each.
            max_repetitions=1,
        ),
        Workload(
            "startup",
            (Metric("startup_s", "pool start + 1 task + close, default start method", "s", False),),
            startup,
            warm_up=None,
        ),
        Workload(
            "startup_scipy",
            (
                Metric(
                    "startup_scipy_s",
                    "the same, the script and the task's module importing numpy, scipy.optimize",
                    "s",
                    False,
                ),
            ),
            startup_scipy,
            warm_up=None,
            needs=("numpy", "scipy"),
            script="bench_main_scipy.py",
        ),
        Workload(
            "generator",
            (
                Metric(
                    "gen_pulled",
                    "imap over a {gen_items:,}-item generator, read "
                    "{gen_read:,}, stop: items pulled",
                    "items",
                    False,
                ),
                Metric(
                    "gen_rss_mb",
                    "the same: parent memory grown (ratios count under 1 MB as 1 MB)",
                    "MB",
                    False,
                    floor=1.0,
                ),
            ),
            generator_stop,
            ends_pool=True,
        ),
    )
}
