"""Unit tests of the senders' side of shared memory (``_shm.SegmentPool``) and of the feeder's
part in reusing segments, without worker processes.

A sender fills a new segment with write(2) and maps it only once it is reused; it reuses a
segment only once the receiver gave it back; while receivers hold ``depth`` segments that would
fit a buffer, it waits a little for one of them rather than make a new one, but never for a
segment of the message being made, never again after a wait in vain until one comes back, and
never once the pool is closed. Threads that wait are watched through the pool's condition
(its waiters), never with sleeps.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from procpool import _shm
from procpool._feeding import Feeder, fixed_size
from procpool._protocol import Mode
from procpool._shm import Segment, SegmentPool

MIB = 2**20
WAIT = 10.0  # bound on waits for another thread (a hang detector, not a timing)

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="no memfd_create")


def buffer(fill: int, size: int = MIB) -> memoryview:
    return memoryview(bytes([fill]) * size)


def contents(segment: Segment) -> bytes:
    return os.pread(segment.fd, segment.length, 0)


def procpool_fds() -> set[int]:
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:procpool"):
                found.add(int(name))
        except FileNotFoundError:
            continue
    return found


@pytest.fixture
def pool() -> Iterator[SegmentPool]:
    made = SegmentPool(depth=1)
    yield made
    made.close()


@pytest.fixture
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waits for a segment last as long as the test needs (bounded by the test's timeout)."""
    monkeypatch.setattr(_shm, "_WAIT_PER_BYTE", 1.0)


def waiting(pool: SegmentPool) -> bool:
    return bool(pool._returned._waiters)  # type: ignore[attr-defined]


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        os.sched_yield()


class Taker(threading.Thread):
    """Takes a segment on a thread of its own, as a second caller would."""

    def __init__(self, pool: SegmentPool, data: memoryview, pending: tuple[Segment, ...]) -> None:
        super().__init__(daemon=True)
        self.pool, self.data, self.pending = pool, data, pending
        self.segment: Segment | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.segment = self.pool.take(self.data, self.pending)
        except BaseException as exc:
            self.error = exc

    def result(self) -> Segment:
        self.join(WAIT)
        assert not self.is_alive(), "take() did not return"
        assert self.error is None
        assert self.segment is not None
        return self.segment


def take_elsewhere(pool: SegmentPool, data: memoryview, pending: tuple[Segment, ...] = ()) -> Taker:
    taker = Taker(pool, data, pending)
    taker.start()
    return taker


# -- writing and reusing -----------------------------------------------------------------------


def test_a_new_segment_is_written_without_a_mapping_and_mapped_once_reused() -> None:
    pool = SegmentPool()
    first = pool.take(buffer(1))
    assert contents(first) == bytes(buffer(1))
    assert first.mm is None, "a new segment is filled with write(2), not through a mapping"
    pool.give_back([first.sid], reusable=True)
    again = pool.take(buffer(2, MIB - 4096))
    assert again is first, "a segment given back is reused for a buffer that fits"
    assert contents(again) == bytes(buffer(2, MIB - 4096))
    assert again.mm is not None
    pool.give_back([again.sid], reusable=True)
    assert pool.take(buffer(3)).mm is again.mm, "the mapping serves every later reuse"
    assert contents(again) == bytes(buffer(3))
    pool.close()


def test_a_segment_is_not_reused_before_it_is_given_back_or_when_kept() -> None:
    pool = SegmentPool()
    first = pool.take(buffer(1))
    second = pool.take(buffer(2))
    assert second is not first
    assert pool.give_back([second.sid], reusable=False) == [second]  # the receiver kept it
    third = pool.take(buffer(3))
    assert third not in (first, second)
    assert contents(first) == bytes(buffer(1))
    pool.close()


def test_a_buffer_of_several_gib_is_written_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """write(2) may write less than asked (Linux: about 2 GiB a call): the rest follows."""
    calls = []
    real = os.pwrite

    def short_pwrite(fd: int, data: memoryview, offset: int) -> int:
        calls.append(offset)
        return real(fd, data[:100_000], offset)

    monkeypatch.setattr(os, "pwrite", short_pwrite)
    pool = SegmentPool()
    data = memoryview(bytes(range(256)) * 4096)
    segment = pool.take(data)
    assert contents(segment) == bytes(data)
    assert len(calls) == -(-data.nbytes // 100_000)
    pool.close()


def test_a_write_that_fails_leaves_no_segment(monkeypatch: pytest.MonkeyPatch) -> None:
    before = procpool_fds()
    pool = SegmentPool()

    def no_space(fd: int, data: memoryview, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", no_space)
    with pytest.raises(OSError, match="space"):
        pool.take(buffer(1))
    assert procpool_fds() == before
    assert pool.lent(0) is None
    pool.close()


def test_a_closed_pool_makes_no_segment() -> None:
    before = procpool_fds()
    pool = SegmentPool()
    pool.close()
    with pytest.raises(ValueError, match="not running"):
        pool.take(buffer(1))
    assert procpool_fds() == before


# -- waiting for a segment to come back -----------------------------------------------------


@pytest.mark.usefixtures("patient")
def test_with_receivers_at_depth_a_sender_waits_for_a_segment(pool: SegmentPool) -> None:
    held = pool.take(buffer(1))
    taker = take_elsewhere(pool, buffer(2))
    wait_until(lambda: waiting(pool), "the second take waits")
    pool.give_back([held.sid], reusable=True)
    assert taker.result() is held, "it waited for the segment instead of making one"
    assert contents(held) == bytes(buffer(2))


@pytest.mark.usefixtures("patient")
def test_below_depth_or_for_a_size_that_would_not_fit_a_sender_does_not_wait() -> None:
    pool = SegmentPool(depth=2)
    first = pool.take(buffer(1))
    second = take_elsewhere(pool, buffer(2)).result()  # one held: below the depth
    # Two held now, but neither would take a buffer four times larger.
    assert take_elsewhere(pool, buffer(3, 4 * MIB)).result() not in (first, second)
    pool.close()


@pytest.mark.usefixtures("patient")
def test_a_sender_never_waits_for_a_segment_of_the_same_message(pool: SegmentPool) -> None:
    """The message's segments cannot come back before it is sent."""
    mine = pool.take(buffer(1))
    assert take_elsewhere(pool, buffer(2), (mine,)).result() is not mine


def test_a_wait_in_vain_is_not_repeated_until_a_segment_comes_back(
    pool: SegmentPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = pool.take(buffer(1))
    monkeypatch.setattr(_shm, "_WAIT_PER_BYTE", 0.0)  # the next wait runs out at once
    second = pool.take(buffer(2))
    assert second is not held
    monkeypatch.setattr(_shm, "_WAIT_PER_BYTE", 1.0)
    third = take_elsewhere(pool, buffer(3)).result()  # would wait for good, were it to wait
    assert third not in (held, second)
    pool.give_back([held.sid], reusable=True)
    assert pool.take(buffer(4)) is held
    # A segment came back: waiting is worth it again.
    taker = take_elsewhere(pool, buffer(5))
    wait_until(lambda: waiting(pool), "a take waits again")
    pool.give_back([second.sid], reusable=True)
    assert taker.result() is second


@pytest.mark.usefixtures("patient")
def test_closing_the_pool_ends_a_wait(pool: SegmentPool) -> None:
    before = procpool_fds()
    pool.take(buffer(1))
    taker = take_elsewhere(pool, buffer(2))
    wait_until(lambda: waiting(pool), "the second take waits")
    pool.close()
    taker.join(WAIT)
    assert not taker.is_alive()
    assert isinstance(taker.error, ValueError), "a closed pool makes no segment"
    assert procpool_fds() == before


# -- the feeder submits each task with segments at once -----------------------------------------


class RecordingSink:
    """A result object for a feeder: room for everything, the feeder's calls recorded."""

    def __init__(self, events: list[Any]) -> None:
        self.events = events

    def _reserve(self) -> int:
        return 100

    def _note_chunk(self, index: int, size: int) -> None:
        pass

    def _note_submitted(self, chunks: int) -> None:
        self.events.append(("noted", chunks))

    def _fail(self, index: int, exc: BaseException) -> None:
        self.events.append(("failed", index))

    def _input_failed(self, index: int, exc: BaseException) -> None:
        self.events.append(("input failed", index))

    def _set_length(self, chunks: int) -> None:
        self.events.append(("length", chunks))


def test_a_feeder_submits_each_task_with_segments_as_soon_as_it_is_pickled() -> None:
    """So that the workers run it while the next ones are pickled, and its segments come back
    in time to be reused; the chunks are noted as submitted before they are submitted, and
    chunks without large buffers still go together."""
    events: list[Any] = []

    class Backend:
        def submit(self, tasks: list[Any]) -> None:
            events.append(("submitted", [t.index for t in tasks]))

    def prepare(mode: Mode, chunk: list[str], sink: Any, index: int) -> Any:
        if chunk == ["unpicklable"]:
            raise TypeError("cannot pickle")
        return SimpleNamespace(index=index, segments=["s"] if chunk == ["big"] else [])

    items = ["small", "big", "small", "unpicklable", "small", "big", "big", "small", "small"]
    feeder = Feeder(
        Backend(),  # type: ignore[arg-type]
        RecordingSink(events),
        items,
        fixed_size(1),
        prepare,
        Mode.MAP,
        lambda: events.append(("ended",)),
    )
    feeder.start(first_in_caller=True)
    # (Pickling these takes far less than SUBMIT_EVERY: the others wait for a chunk with
    # segments, or the end.)
    assert events == [
        ("noted", 2),
        ("submitted", [0, 1]),
        ("failed", 3),
        ("noted", 4),
        ("submitted", [2, 4, 5]),
        ("noted", 1),
        ("submitted", [6]),
        ("noted", 2),
        ("submitted", [7, 8]),
        ("length", 9),
        ("ended",),
    ]


def test_a_submission_that_fails_early_is_not_taken_for_the_inputs_failure() -> None:
    events: list[Any] = []

    class Terminated(Exception):
        pass

    class Backend:
        def submit(self, tasks: list[Any]) -> None:
            raise Terminated

    feeder = Feeder(
        Backend(),  # type: ignore[arg-type]
        RecordingSink(events),
        ["big", "big"],
        fixed_size(1),
        lambda mode, chunk, sink, index: SimpleNamespace(index=index, segments=["s"]),
        Mode.MAP,
        lambda: events.append(("ended",)),
    )
    with pytest.raises(Terminated):
        feeder.start(first_in_caller=True)
    assert events == [("noted", 1), ("length", 1), ("ended",)]
