"""The Pool facade against a fake backend: no process, no cluster.

``_backends.make_backend`` is the one place the facade gets its backend from; replacing it with
an inline backend (each task run at once, in the submitting thread, by ``_inband.run_inband``)
shows what the facade itself does with the ``Backend`` interface: pickling, chunking, feeding,
result order, exceptions, callbacks, the lifecycle.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest

import procpool
from procpool import _pool
from procpool._backend import Measured, PreparedTask, ResultSink
from procpool._backends import Built
from procpool._feeding import PROBE_WAIT
from procpool._inband import run_inband
from procpool._protocol import Status, WireTask
from procpool._serialize import dumps_callable


class InlineBackend:
    """Runs each task as it is submitted; records what the facade asked of it."""

    def __init__(self) -> None:
        self.tasks: list[PreparedTask] = []
        self.closed = False
        self.per_item = 1e-6  # what the backend says one call takes
        self.unmeasured = 0  # nothing is measured until this many tasks have run
        self.waits: list[tuple[float, int, int]] = []  # (wait, samples in all, tasks run)
        self.terminated = False
        self.done = threading.Event()

    def submit(self, tasks: list[PreparedTask]) -> None:
        for task in tasks:
            self.tasks.append(task)
            assert not task.segments, "no shared memory was asked for"
            status, payload = run_inband(
                WireTask(
                    0,
                    task.mode,
                    task.function,
                    task.arguments,
                    task.retry_on,
                    task.return_exceptions,
                )
            )
            task.sink._deliver(task.index, Status(status), memoryview(payload))

    def cancel(self, sink: ResultSink) -> bool:
        return False  # every task finished as it was submitted

    def close(self) -> None:
        self.closed = True
        self.done.set()

    def terminate(self) -> None:
        self.terminated = True
        self.done.set()

    def join(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def item_seconds(self, function: bytes, wait: float = 0.0, until: int = 0) -> Measured:
        if wait:
            self.waits.append((wait, until, len(self.tasks)))
        if len(self.tasks) < self.unmeasured:
            return Measured(None, 0)
        return Measured(self.per_item, len(self.tasks))


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> InlineBackend:
    fake = InlineBackend()

    def make(*args: Any, **kwargs: Any) -> Built:
        return Built(fake, None, 3, dumps_callable)

    monkeypatch.setattr(_pool, "make_backend", make)
    return fake


def test_the_facade_runs_every_method_on_any_backend(backend: InlineBackend) -> None:
    with procpool.Pool(backend="inline-fake") as pool:
        assert pool._processes == 3
        assert pool.apply(divmod, (7, 2)) == (3, 1)
        assert pool.map(abs, range(-50, 0)) == list(range(50, 0, -1))
        assert pool.starmap(pow, [(2, 3)]) == [8]
        assert list(pool.imap(abs, [-1, -2, -3])) == [1, 2, 3]
        assert sorted(pool.imap_unordered(abs, [-1, -2])) == [1, 2]
        got: list[Any] = []
        pool.apply_async(abs, (-5,), callback=got.append).wait()
        with pytest.raises(ZeroDivisionError):
            pool.apply(divmod, (1, 0))
        assert pool._pool == []
    assert backend.closed
    assert not backend.terminated
    assert got == [5]


def test_a_closed_pool_closes_its_backend_once_every_imap_input_is_read(
    backend: InlineBackend,
) -> None:
    pool = procpool.Pool(backend="inline-fake")
    ready = threading.Event()
    go_on = threading.Event()

    def slow_input() -> Any:
        yield 1
        ready.set()
        assert go_on.wait(10)
        yield 2

    results = pool.imap(abs, slow_input(), chunksize=1)
    assert ready.wait(10)  # the feeder is reading the input
    pool.close()
    # The input may still yield tasks: the backend must not be told that none will come.
    assert not backend.closed
    go_on.set()
    assert list(results) == [1, 2]
    pool.join()
    assert backend.closed


def test_automatic_chunks_follow_the_backends_measure(backend: InlineBackend) -> None:
    backend.per_item = 1e-4  # from the start: 50 items make 5 ms, 10 items the floor of 1 ms
    with procpool.Pool(backend="inline-fake") as pool:
        assert pool.map(abs, range(5000)) == list(range(5000))
    # Chunks double from the floor up to the target (within the map's cap, a quarter of an even
    # share among the backend's 3 workers: 417 items), then shrink, as the input runs out, to
    # an eighth of what is left per worker but not under the floor.
    sizes = [task.items for task in backend.tasks]
    assert sum(sizes) == 5000
    assert sizes[:4] == [10, 20, 40, 50]
    assert max(sizes) == 50
    assert sizes[-3:-1] == [10, 10]
    assert 1 <= sizes[-1] <= 10
    assert all(b <= 2 * a for a, b in itertools.pairwise(sizes))


def test_a_first_map_waits_for_its_first_measurement_after_a_chunk_per_worker(
    backend: InlineBackend,
) -> None:
    # (This backend runs each task as it is submitted, and the feeder submits the first chunk
    # alone: had it measured at once, no wait would be needed. A backend whose measurement
    # comes later:)
    backend.unmeasured = 3
    with procpool.Pool(backend="inline-fake") as pool:
        assert pool.map(abs, range(1000)) == list(range(1000))
    # One single item per worker went out (and ran: the measure comes from them) before the
    # feeder waited for a measurement, then the chunks follow it (1 us per item: the map's cap,
    # 84 items, at once).
    assert backend.waits == [(PROBE_WAIT, 3, 3)]  # for what the 3 chunks out measure
    assert [task.items for task in backend.tasks][:4] == [1, 1, 1, 84]


def test_tiny_items_travel_in_the_standard_librarys_chunks(backend: InlineBackend) -> None:
    with procpool.Pool(backend="inline-fake") as pool:
        assert pool.map(abs, range(1000)) == list(range(1000))
    # 1 us per item: even the floor is past the map's cap (84 items).
    assert [task.items for task in backend.tasks] == [84] * 11 + [76]
