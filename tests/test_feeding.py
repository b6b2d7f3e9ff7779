"""Unit tests of map-family input feeding: chunk sizes and chunking, without processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from procpool._feeding import (
    IMAP_MAX_CHUNK,
    TARGET_CHUNK_SECONDS,
    ChunkSizer,
    chunks,
    fixed_size,
    map_chunk_cap,
)


def test_one_item_a_chunk_until_measured() -> None:
    sizer = ChunkSizer(lambda: None, cap=1000)
    assert [sizer() for _ in range(5)] == [1, 1, 1, 1, 1]


def test_chunks_grow_at_most_twofold_towards_the_target() -> None:
    per_item = TARGET_CHUNK_SECONDS / 100  # 100 items make the target
    sizer = ChunkSizer(lambda: per_item, cap=10_000)
    assert [sizer() for _ in range(9)] == [2, 4, 8, 16, 32, 64, 100, 100, 100]


def test_long_items_travel_one_at_a_time() -> None:
    sizer = ChunkSizer(lambda: 10 * TARGET_CHUNK_SECONDS, cap=10_000)
    assert {sizer() for _ in range(10)} == {1}


def test_chunks_never_exceed_the_cap() -> None:
    sizer = ChunkSizer(lambda: 1e-12, cap=IMAP_MAX_CHUNK)
    sizes = [sizer() for _ in range(30)]
    assert max(sizes) == IMAP_MAX_CHUNK
    assert sizes[-1] == IMAP_MAX_CHUNK


def test_a_measurement_that_changes_is_followed() -> None:
    seconds = [TARGET_CHUNK_SECONDS / 8]
    sizer = ChunkSizer(lambda: seconds[0], cap=1000)
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


def test_chunks_shrink_as_a_known_input_runs_out() -> None:
    """The last chunks are small: no worker ends with a long chunk while the others idle."""
    sizer = ChunkSizer(lambda: 1e-12, cap=10_000, length=1000, workers=2)
    sizes = []
    while sum(sizes) < 1000:
        sizes.append(sizer())
    assert max(sizes) <= 1000 // 16
    assert sizes[-4:] == [1, 1, 1, 1]
    peak = sizes.index(max(sizes))
    assert sizes[peak:] == sorted(sizes[peak:], reverse=True)  # only shrinking after the peak
