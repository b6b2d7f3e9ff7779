"""Feeding a map-family call's input to the backend: chunk sizes, reading, pickling, windows.

Every map-family call (``map``, ``starmap``, ``imap``, ``imap_unordered`` and their async forms)
reads its input in chunks and submits them while its result object has room: at most a window
of chunks in flight, so that neither an endless ``imap`` input nor a huge ``map`` holds all its
pickled tasks at once. ``map`` submits its first window from the caller's thread and the rest
from a feeder thread; ``imap`` reads its input on the feeder thread only, as the standard library
does, since a generator may block.

When the caller gives no ``chunksize``, :class:`ChunkSizer` picks each chunk's size from the
measured time per item: tiny items travel thousands to a task, items that take milliseconds one
at a time; the time per item is measured for each function apart. Until a measurement comes
every chunk holds one item, then chunks start at a fifth of the target's work and grow at most
twofold each, so the first results come early. A ``map`` chunk fails as a whole, as in the
standard library; an ``imap`` chunk's items fail alone (see ``TaskCore.item_lost``). A ``map``
chunk never exceeds the standard library's size (a quarter of an even share), so the work still
spreads over the workers; an ``imap`` chunk never exceeds ``IMAP_MAX_CHUNK`` items, so its
read-ahead stays bounded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, Protocol

from ._backend import Backend, Measured, PreparedTask
from ._protocol import Mode

__all__ = ["IMAP_MAX_CHUNK", "ChunkSizer", "Feedable", "Feeder", "fixed_size", "map_chunk_cap"]

# Work a chunk should stand for, once the time per item is known: long enough to make the
# per-task cost negligible, short enough to spread the work and to deliver results early.
TARGET_CHUNK_SECONDS = 0.005
# The largest chunk of an imap: its window is counted in chunks, and this bounds how far
# ahead of its consumer an imap reads its input (window x this many items). Tiny items cost
# the parent about a microsecond each at this size (a task's own cost, spread over them).
IMAP_MAX_CHUNK = 64
# Once the time per item is known, a chunk may always stand for this share of the target's work,
# however it grows or shrinks: smaller chunks would cost more to dispatch than they balance (a
# chunk of a millisecond, locally, finishes within a millisecond of the others).
FLOOR_SHARE = 0.2
# While chunks are still growing towards their target (from one item before any measurement),
# once a chunk per worker is out the feeder waits up to this long for a new measurement instead
# of reading on in chunks sized from an old one (it comes with the next result; should that be
# slow, another chunk per worker goes out after each wait).
PROBE_WAIT = 0.05
# A feeder reading many chunks at once submits what it has pickled at least this often (seconds),
# so that the workers need not wait for the whole read.
SUBMIT_EVERY = 0.001


class Feedable(Protocol):
    """A result object a feeder fills: it bounds the chunks in flight and learns their sizes."""

    def _reserve(self) -> int:
        """How many chunks may be submitted now (blocks while none may); 0: stop feeding."""

    def _stopped(self) -> bool:
        """Whether the feeding must stop (the result was cancelled, or failed as a whole)."""

    def _note_chunk(self, index: int, size: int) -> None: ...

    def _note_submitted(self, chunks: int) -> None: ...

    def _fail(self, index: int, exc: BaseException) -> None: ...

    def _input_failed(self, index: int, exc: BaseException) -> None:
        """The input raised while chunk ``index`` was read: no result comes after it."""

    def _set_length(self, chunks: int) -> None:
        """The feeder has submitted every chunk: this many."""


def fixed_size(size: int) -> Callable[[], int]:
    return lambda: size


def map_chunk_cap(length: int, workers: int) -> int:
    """The standard library's chunk size for a map: about four chunks per worker."""
    return max(1, -(-length // (4 * workers)))


class Measure(Protocol):
    """Seconds per item measured lately and the measurements so far, after waiting up to
    ``wait`` seconds until there are ``until`` of them."""

    def __call__(self, wait: float = 0.0, until: int = 0) -> Measured: ...


class ChunkSizer:
    """Sizes the next chunk from the measured time per item (``measure``, None if unknown),
    at most ``cap`` items: one item a chunk until a measurement comes, then growing at most
    twofold a chunk towards ``target`` seconds of work (a backend whose tasks cost more to
    dispatch asks for more). With a known ``length``, chunks also shrink as the input runs
    out (at most an eighth of the items left per worker, ``workers`` of them), so the last
    chunks are small and no worker is left with a long one while the others have finished.
    Neither rule makes a chunk smaller than ``FLOOR_SHARE`` of the target's measured work (tiny
    items in a short map travel in a few chunks, as with the standard library's size).

    ``measure(wait, until)`` gives the measured seconds per item and the measurements so far,
    first waiting up to ``wait`` seconds until there are ``until``. While chunks grow (the first
    measurements, from few items, are mostly fixed costs), :meth:`probing` says, once a chunk
    per worker is out, that the feeder should wait for what they measure (with nothing held
    back) by calling :meth:`settle`, rather than make many chunks from the old figure."""

    def __init__(
        self,
        measure: Measure,
        cap: int,
        target: float = TARGET_CHUNK_SECONDS,
        length: int | None = None,
        workers: int = 1,
        probe: bool = True,
    ) -> None:
        """``probe``: wait for new measurements while chunks grow (see :meth:`probing`)."""
        self._measure = measure
        self._probe = probe
        self._growing = True  # the chunks have not yet reached their target
        self._unsettled = 0  # chunks made while growing since the last wait for a measurement
        self._base = 0  # the measurements there were when the first of those chunks was made
        self._last = 1  # the size the last chunk grew to (before it shrank for the input's end)
        self._cap = cap
        self._target = target
        self._floor = FLOOR_SHARE * target
        self._left = length
        self._workers = workers

    def probing(self) -> bool:
        """True once a chunk per worker is out while chunks grow: time to :meth:`settle`."""
        return self._probe and self._growing and self._unsettled >= self._workers

    def settle(self) -> None:
        """Wait a moment for what the chunks out measure (the feeder holds none back)."""
        self._measure(PROBE_WAIT, self._base + self._unsettled)
        self._unsettled = 0

    def __call__(self) -> int:
        seconds, samples = self._measure()
        if not self._unsettled:
            self._base = samples  # a new wave of growing chunks: what it measures comes after
        size = 1
        if seconds is None:
            self._growing = True
        else:
            seconds = max(seconds, 1e-9)
            floor = int(self._floor / seconds)
            wanted = min(int(self._target / seconds), self._cap)
            # Growth is one rule, shrinking near the end another: a chunk shrunk for the end
            # of the input is not one still growing (nor worth waiting for a measurement).
            size = self._last = max(1, min(wanted, max(2 * self._last, floor)))
            self._growing = size < wanted
            if self._left is not None:
                size = max(1, min(size, max(self._left // (8 * self._workers), floor), self._left))
        self._unsettled += self._growing
        if self._left is not None:
            self._left -= size
        return size


def chunks(
    iterable: Iterable[Any], size: Callable[[], int], keep_partial: bool
) -> Iterator[list[Any]]:
    """The input in lists of ``size()`` items. Should the input raise, ``keep_partial`` says
    whether the items of the chunk being read come out first. The standard library drops them
    (its results end at the start of that chunk); chunks procpool chose itself keep them, so
    the results are those of one item per chunk."""
    iterator = iter(iterable)
    while True:
        chunk: list[Any] = []
        try:
            chunk.extend(islice(iterator, size()))
        except Exception:
            if chunk and keep_partial:
                yield chunk
            raise
        if not chunk:
            return
        yield chunk


class Feeder:
    """Reads one call's input in chunks, pickles them and submits them as the sink has room."""

    def __init__(
        self,
        backend: Backend,
        sink: Feedable,
        iterable: Iterable[Any],
        size: Callable[[], int],
        prepare: Callable[[Mode, Any, Any, int], PreparedTask],
        mode: Mode,
        on_end: Callable[[], None],
    ) -> None:
        """``size``: a :class:`ChunkSizer`, or :func:`fixed_size` for the caller's chunksize."""
        self._backend = backend
        self._sink = sink
        self._sizer = size if isinstance(size, ChunkSizer) else None
        self._chunks = chunks(iterable, size, keep_partial=self._sizer is not None)
        self._prepare = prepare
        self._mode = mode
        self._on_end = on_end
        self._index = 0
        self._done = False

    def start(self, first_in_caller: bool) -> None:
        """Feed, on a thread of its own; ``first_in_caller``: the first window from here."""
        if first_in_caller:
            self._round()
            if self._done:
                return
        threading.Thread(target=self.run, name="procpool-feeder", daemon=True).start()

    def run(self) -> None:
        while not self._done:
            self._round()

    def _round(self) -> None:
        """Submit as many chunks as the sink has room for; on the last, end the feed."""
        try:
            room = self._sink._reserve()
            if room == 0:  # stopped: the pool was terminated, or the result has failed
                self._end(None)
                return
            tasks, read, pending, failure = self._read(room)
            self._submit(tasks, pending)
            if failure is not None:
                self._sink._input_failed(self._index, failure)
                self._index += 1
                self._end(self._index)
            elif read < room:
                self._end(self._index)
        except BaseException:
            self._end(self._index)
            raise

    def _submit(self, tasks: list[PreparedTask], chunks: int) -> None:
        if chunks:
            self._sink._note_submitted(chunks)
        if tasks:
            self._backend.submit(tasks)

    def _read(self, room: int) -> tuple[list[PreparedTask], int, int, BaseException | None]:
        """Pickle up to ``room`` chunks. Returns the tasks not submitted yet, the chunks read,
        those of them not submitted yet, and the exception the input raised, if any."""
        tasks: list[PreparedTask] = []
        read = submitted = 0
        # What was pickled goes out at least every SUBMIT_EVERY seconds: the workers start on
        # the first chunks while the next are pickled, and a short read is one submission.
        since = time.perf_counter()
        chunks = islice(self._chunks, room)
        while True:
            if self._sizer is not None and self._sizer.probing():
                # The measurement will come from the chunks made so far: out with them first.
                self._submit(tasks, read - submitted)
                tasks, submitted = [], read
                self._sizer.settle()
                if self._sink._stopped():
                    return tasks, read, 0, None  # cancelled meanwhile: read no further
            try:
                chunk = next(chunks, None)
            except Exception as exc:
                # The input itself raised: its exception ends the results.
                return tasks, read, read - submitted, exc
            if chunk is None:
                return tasks, read, read - submitted, None
            read += 1
            self._sink._note_chunk(self._index, len(chunk))
            try:
                tasks.append(self._prepare(self._mode, chunk, self._sink, self._index))
            except Exception as exc:
                # This chunk would not pickle: it fails alone and the input goes on, as in the
                # standard library.
                self._sink._fail(self._index, exc)
            self._index += 1
            # (A task whose large buffers are in shared-memory segments goes at once: it runs
            # while the next ones are pickled, and its segments come back in time to be reused
            # for them instead of new ones.)
            if tasks and (tasks[-1].segments or time.perf_counter() - since >= SUBMIT_EVERY):
                self._submit(tasks, read - submitted)
                tasks, submitted = [], read
                since = time.perf_counter()

    def _end(self, chunks_fed: int | None) -> None:
        if self._done:
            return
        self._done = True
        if chunks_fed is not None:
            self._sink._set_length(chunks_fed)
        self._on_end()
