"""Unit tests of map-family input feeding: chunk sizes and chunking, without processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from procpool._backend import Measured
from procpool._feeding import (
    FLOOR_SHARE,
    IMAP_MAX_CHUNK,
    PROBE_WAIT,
    TARGET_CHUNK_SECONDS,
    ChunkSizer,
    chunks,
    fixed_size,
    map_chunk_cap,
)


def measured(seconds: float | None) -> Callable[..., Measured]:
    """A measure that always says ``seconds`` per item, at once."""
    return lambda wait=0.0, until=0: Measured(seconds, 0 if seconds is None else 1)


def test_one_item_a_chunk_until_measured() -> None:
    sizer = ChunkSizer(measured(None), cap=1000)
    assert [sizer() for _ in range(5)] == [1, 1, 1, 1, 1]


def test_while_chunks_grow_the_feeder_waits_for_a_new_measurement_after_each_wave() -> None:
    waits: list[tuple[float, int]] = []
    measured: list[float] = []

    def measure(wait: float = 0.0, until: int = 0) -> Measured:
        if wait:
            waits.append((wait, until))
        return Measured(measured[-1] if measured else None, len(measured))

    sizer = ChunkSizer(measure, cap=1000, workers=2)
    assert not sizer.probing()
    assert [sizer(), sizer()] == [1, 1]  # one item per worker before any measurement
    assert sizer.probing()  # wait for what they measure, rather than read on in single items
    sizer.settle()
    assert waits == [(PROBE_WAIT, 2)]  # for what the two chunks out measure
    assert not sizer.probing()
    # They measured: the target is 100 items, the floor 20 (the measurements count 2 now).
    measured.extend([TARGET_CHUNK_SECONDS / 100] * 2)
    assert [sizer(), sizer()] == [20, 40]
    assert sizer.probing()  # still growing: wait for what these measure
    sizer.settle()
    assert [sizer(), sizer()] == [80, 100]
    assert not sizer.probing()  # the target is reached: no more waiting
    assert [sizer(), sizer(), sizer()] == [100, 100, 100]
    assert not sizer.probing()
    # Each wait is for the measurements counted when its wave began, and two more: the wave's
    # chunks may report before the wait begins.
    assert waits == [(PROBE_WAIT, 2), (PROBE_WAIT, 4)]


def test_an_imap_does_not_wait_for_measurements() -> None:
    """An imap hands out each result: its items go one a chunk until measured, each failing
    alone, however long the measurement takes."""
    sizer = ChunkSizer(measured(None), cap=16, workers=2, probe=False)
    assert [sizer() for _ in range(6)] == [1] * 6
    assert not sizer.probing()


def test_chunks_start_at_the_floor_and_grow_at_most_twofold_towards_the_target() -> None:
    per_item = TARGET_CHUNK_SECONDS / 1000  # about 1000 items make the target, 200 the floor
    target = int(TARGET_CHUNK_SECONDS / per_item)
    floor = int(FLOOR_SHARE * TARGET_CHUNK_SECONDS / per_item)
    assert 190 <= floor <= 200
    assert 990 <= target <= 1000
    sizer = ChunkSizer(measured(per_item), cap=10_000)
    assert [sizer() for _ in range(6)] == [floor, 2 * floor, 4 * floor, target, target, target]


def test_long_items_travel_one_at_a_time() -> None:
    sizer = ChunkSizer(measured(10 * TARGET_CHUNK_SECONDS), cap=10_000)
    assert {sizer() for _ in range(10)} == {1}


def test_chunks_never_exceed_the_cap() -> None:
    sizer = ChunkSizer(measured(1e-12), cap=IMAP_MAX_CHUNK)
    sizes = [sizer() for _ in range(30)]
    assert max(sizes) == IMAP_MAX_CHUNK
    assert sizes[-1] == IMAP_MAX_CHUNK


def test_a_measurement_that_changes_is_followed() -> None:
    seconds = [TARGET_CHUNK_SECONDS / 8]
    sizer = ChunkSizer(lambda wait=0.0, until=0: Measured(seconds[0], 1), cap=1000)
    assert [sizer() for _ in range(4)] == [2, 4, 8, 8]
    seconds[0] = TARGET_CHUNK_SECONDS  # the items became slow: back to one at a time
    assert sizer() == 1


@pytest.mark.parametrize(
    ("length", "workers", "cap"), [(200_000, 2, 25_000), (10, 4, 1), (0, 2, 1), (33, 2, 5)]
)
def test_map_cap_is_the_standard_librarys_chunk_size(length: int, workers: int, cap: int) -> None:
    assert map_chunk_cap(length, workers) == cap


def test_fixed_chunks() -> None:
    assert list(chunks(range(7), fixed_size(3), keep_partial=False)) == [[0, 1, 2], [3, 4, 5], [6]]


def failing_after(n: int) -> Iterator[int]:
    yield from range(n)
    raise KeyError("input failed")


def test_caller_chunks_drop_the_partial_chunk_when_the_input_raises() -> None:
    """As the standard library: results end at the start of the chunk being read."""
    produced = chunks(failing_after(7), fixed_size(3), keep_partial=False)
    assert [next(produced), next(produced)] == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(KeyError):
        next(produced)


def test_chosen_chunks_keep_the_items_read_before_the_input_raised() -> None:
    """Chunks procpool chose give the results one item a chunk would have given."""
    produced = chunks(failing_after(7), fixed_size(3), keep_partial=True)
    assert [next(produced), next(produced), next(produced)] == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(KeyError):
        next(produced)


def sizes_for(sizer: ChunkSizer, length: int) -> list[int]:
    sizes: list[int] = []
    while sum(sizes) < length:
        sizes.append(sizer())
    return sizes


def test_chunks_shrink_as_a_known_input_runs_out() -> None:
    """The last chunks are small: no worker ends with a long chunk while the others idle."""
    per_item = TARGET_CHUNK_SECONDS / 500  # the floor: 100 items
    sizes = sizes_for(ChunkSizer(measured(per_item), cap=10_000, length=20_000, workers=2), 20_000)
    assert sum(sizes) == 20_000
    assert max(sizes) <= 500
    assert sizes[-4:-1] == [100, 100, 100]  # down to the floor, not below (then what is left)
    assert 1 <= sizes[-1] <= 100
    peak = sizes.index(max(sizes))
    assert sizes[peak:] == sorted(sizes[peak:], reverse=True)  # only shrinking after the peak


def test_slow_items_shrink_to_one_a_chunk_at_the_end() -> None:
    per_item = TARGET_CHUNK_SECONDS / 8  # the floor is under one item
    sizes = sizes_for(ChunkSizer(measured(per_item), cap=10_000, length=400, workers=2), 400)
    assert max(sizes) == 8
    assert sizes[-4:] == [1, 1, 1, 1]


def test_a_short_map_of_tiny_items_travels_in_the_standard_librarys_chunks() -> None:
    """75 items of 10 us (scipy's differential_evolution on rosen, say): a few chunks of the
    standard library's size, not dozens of one or two items that cost more than they run."""
    cap = map_chunk_cap(75, 2)
    sizes = sizes_for(ChunkSizer(measured(1e-5), cap=cap, length=75, workers=2), 75)
    assert sizes == [10] * 7 + [5]
