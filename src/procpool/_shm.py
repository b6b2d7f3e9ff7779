"""Large buffers in shared memory: pickle protocol 5's out-of-band buffers, without copies.

When a task's arguments or result hold a large buffer, pickle hands it to us instead of copying
it into the pickle; we copy it once into a shared-memory segment and send the segment's
descriptor beside the frame. The receiver maps the segment and unpickles straight from it: a
numpy array it gets lives in the shared pages (so does a memoryview; bytes and bytearrays are
copied out once, being immutable or owning their memory). Objects that pickle their data as
protocol 5 buffers (numpy arrays and the like) travel this way wherever they are; bytes,
bytearrays and memoryviews do where procpool can see them without walking the whole value: as
the value itself, or an element of a small tuple, list or dict at most two levels down (a task's
arguments, a map's items, a result).

Segments are anonymous (``memfd_create``): they have no name in ``/dev/shm`` and the kernel frees
them when the last descriptor and mapping are gone, so a process killed at any moment of a
transfer leaks nothing and no resource tracker is involved.

Segments are reused, because new pages cost several times the copy itself: the kernel
allocates, zeroes and accounts for each 4 KiB page (measured on Linux 6.18 for 32 MB: a new
segment mapped and faulted in, then filled, 20-24 ms; filled with ``write(2)``, 12 ms; a copy
into a reused, mapped segment, 2.5-3 ms). Each side keeps the segments it sent; the receiver maps
each one afresh for every transfer and says when nothing of its side refers to it any more (no
object holds a buffer from it), and the sender then writes the next buffer into the same pages.
A segment the receiver cannot let go of (the user kept the array) is never written again.

Reuse within one call matters as much as across calls: a ``map`` over large arrays submits each
task as soon as its arguments are in segments, and the parent, rather than make a new segment
while the workers already hold a couple each, waits a little for one of them to come back (at
most about what a new one would cost, and not again until one does come back, so that
receivers which keep their segments for long cost one such wait, not one per buffer).

The receiver maps without ``MAP_POPULATE``: its read faults map 16 pages each (the kernel's
fault-around), cheaper than populating pages a task may never touch. Transparent huge pages
would cut the faults further, but shared memory gets them only where the administrator enabled
them (``/sys/kernel/mm/transparent_hugepage/shmem_enabled``), and ``MFD_HUGETLB`` needs reserved
huge pages: neither is the rule, so neither is relied on.

This module is imported by workers: it uses the standard library only.
"""

from __future__ import annotations

import mmap
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

__all__ = [
    "OOB_THRESHOLD",
    "Lent",
    "Segment",
    "SegmentMaps",
    "SegmentPool",
    "SegmentRef",
    "dumps",
    "loads",
]

# Buffers at least this large travel out of band; smaller ones are cheaper copied in the pickle.
OOB_THRESHOLD = 128 * 1024 if hasattr(os, "memfd_create") else sys.maxsize
# Segment sizes are rounded up to this, so that a segment fits the next buffer of about the same
# size.
_GRANULE = 1 << 20
# Free segments a sender keeps for reuse, in bytes; beyond it a returned segment is closed.
_KEEP_FREE = 1 << 30
# A free segment is reused for a buffer of at least this fraction of its size.
_MIN_FILL = 0.5
# A sender waits for a segment to come back at most this long per byte of the buffer: about
# what making and filling a new segment costs (write(2) into new pages runs at 2-3 GB/s), so
# that a wait in vain at most doubles that cost.
_WAIT_PER_BYTE = 1 / 2e9
_PROTOCOL = 5


class SegmentRef(NamedTuple):
    """How a segment is named on the wire: its sender's id for it and the bytes used."""

    sid: int
    length: int
    has_fd: bool  # its descriptor travels with this frame (the receiver has not mapped it)


class Segment:
    """A shared-memory segment the sender owns: its descriptor and, once reused, a mapping."""

    __slots__ = ("capacity", "fd", "length", "mapped_by", "mm", "sid")

    def __init__(self, sid: int, capacity: int) -> None:
        self.sid = sid
        self.capacity = capacity
        self.length = 0  # bytes written last; 0 until the first write
        self.fd = os.memfd_create(f"procpool-{sid}", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, capacity)
        except BaseException:
            os.close(self.fd)
            raise
        self.mm: mmap.mmap | None = None
        self.mapped_by: set[int] = set()  # receivers (worker ids) that keep a mapping of it

    def write(self, buffer: memoryview) -> None:
        """Copy ``buffer`` to the start of the segment.

        The first write goes through ``write(2)``, which allocates the pages as it fills them:
        about twice as fast as faulting a fresh mapping in page by page (the kernel zeroes each
        faulted page before the copy overwrites it), and the GIL is released meanwhile. A
        reused segment's pages exist already: it is mapped once, and later writes are a plain
        copy into that mapping, faster again than ``write(2)``."""
        data = buffer.cast("B")
        fresh = self.length == 0
        self.length = data.nbytes
        if fresh:
            _write_all(self.fd, data)
            return
        if self.mm is None:
            # MAP_POPULATE: the existing pages are mapped in one call, not one fault each.
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            self.mm = mmap.mmap(self.fd, self.capacity, flags=flags)
        self.mm[: self.length] = data

    def close(self) -> None:
        if self.mm is not None:
            self.mm.close()
        os.close(self.fd)


def _fits(segment: Segment, size: int) -> bool:
    """Whether a buffer of ``size`` bytes may go into ``segment`` (not wasting most of it)."""
    return segment.capacity * _MIN_FILL <= size <= segment.capacity


def _write_all(fd: int, data: memoryview) -> None:
    """Write ``data`` at the start of ``fd``, in as many calls as it takes (Linux writes at
    most about 2 GiB a call)."""
    done = 0
    while done < data.nbytes:
        done += os.pwrite(fd, data[done:], done)


class SegmentPool:
    """The segments one process sends: allocated, lent to a receiver, given back, reused.

    Thread-safe: the parent allocates in callers' threads and frees on the scheduler thread.
    """

    def __init__(self, depth: int = 0) -> None:
        """``depth``: how many segments that would fit a buffer the receivers may hold before
        :meth:`take` waits a little for one of them to come back instead of making a new one
        (0: it never waits). A new segment costs several times a copy into a reused one, and
        a map over large arrays would otherwise make one for nearly every array, pickled while
        the first ones are on their way; ``depth`` is what keeps every receiver busy."""
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)
        self._depth = depth
        self._next = 0
        self._free: list[Segment] = []
        self._free_bytes = 0
        self._lent: dict[int, Segment] = {}
        # A wait ran out (the receivers hold their segments for long): no more waiting until
        # one comes back, so that waiting in vain costs at most once per return.
        self._stalled = False
        self._closed = False

    def take(self, buffer: memoryview, pending: Iterable[Segment] = ()) -> Segment:
        """A segment holding a copy of ``buffer``, lent until :meth:`give_back`. ``pending``:
        segments taken for the same message, which cannot come back while it is made.

        Raises ValueError once the pool is closed (terminated while this was pickled): a
        segment made then would never be closed."""
        size = buffer.nbytes
        with self._lock:
            segment = self._reuse(size)
            if segment is None and self._worth_waiting(size, pending):
                segment = self._wait_for(size)
            self._check_open()
            if segment is None:
                sid = self._next
                self._next += 1
        if segment is None:
            segment = Segment(sid, max(_GRANULE, -(-size // _GRANULE) * _GRANULE))
        try:
            segment.write(buffer)
            with self._lock:
                self._check_open()
                self._lent[segment.sid] = segment
        except BaseException:
            self._drop(segment)
            raise
        return segment

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("Pool not running")

    def _drop(self, segment: Segment) -> None:
        """A segment that could not be lent (out of memory, say, or the pool closed): one that
        receivers have mapped stays free for reuse (closed, it would leave them a stale
        descriptor), unless the pool is closed; any other goes."""
        with self._lock:
            if segment.mapped_by and not self._closed:
                self._free.append(segment)
                self._free_bytes += segment.capacity
                return
        segment.close()

    def _reuse(self, size: int) -> Segment | None:
        fits = [s for s in self._free if _fits(s, size)]
        if not fits:
            return None
        segment = min(fits, key=lambda s: s.capacity)
        self._free.remove(segment)
        self._free_bytes -= segment.capacity
        return segment

    def _worth_waiting(self, size: int, pending: Iterable[Segment]) -> bool:
        if not self._depth or self._stalled or self._closed:
            return False
        away = sum(_fits(s, size) for s in self._lent.values())
        return away - sum(_fits(s, size) for s in pending) >= self._depth

    def _wait_for(self, size: int) -> Segment | None:
        """A segment given back within about the time a new one would take to make and fill;
        None if none came."""
        deadline = time.monotonic() + size * _WAIT_PER_BYTE
        while (segment := self._reuse(size)) is None:
            left = deadline - time.monotonic()
            if left <= 0 or self._closed:
                self._stalled = True
                return None
            self._returned.wait(left)
        return segment

    def lent(self, sid: int) -> Segment | None:
        with self._lock:
            return self._lent.get(sid)

    def give_back(self, sids: Iterable[int], reusable: bool) -> list[Segment]:
        """The receiver is done with these segments. ``reusable``: it dropped every reference
        to them (else they are closed). Returns the segments closed, whose receivers' mappings
        are stale."""
        closed: list[Segment] = []
        with self._lock:
            for sid in sids:
                segment = self._lent.pop(sid, None)
                if segment is None:
                    continue
                if reusable and self._free_bytes + segment.capacity <= _KEEP_FREE:
                    self._free.append(segment)
                    self._free_bytes += segment.capacity
                    self._stalled = False
                    self._returned.notify_all()
                else:
                    closed.append(segment)
        for segment in closed:
            segment.close()
        return closed

    def trim_lent(self, keep: int) -> list[Segment]:
        """Close the oldest lent segments beyond ``keep``: their receiver holds them for good,
        it seems, and each costs this process a descriptor. Returns the segments closed."""
        with self._lock:
            excess = len(self._lent) - keep
            closed = [self._lent.pop(sid) for sid in list(self._lent)[: max(0, excess)]]
        for segment in closed:
            segment.close()
        return closed

    def forget_receiver(self, receiver: int) -> None:
        """A receiver died: its mappings are gone."""
        with self._lock:
            for segment in [*self._free, *self._lent.values()]:
                segment.mapped_by.discard(receiver)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._returned.notify_all()
            segments = [*self._free, *self._lent.values()]
            self._free.clear()
            self._lent.clear()
            self._free_bytes = 0
        for segment in segments:
            segment.close()


# Containers longer than this are not searched for bytes-like values to send out of band: their
# elements are small, as a rule, and the search would cost more than it saves.
_SEARCH_LIMIT = 64
_BYTES_LIKE = (bytes, bytearray, memoryview)


class _OutOfBand:
    """Stands in for a large bytes-like value, so that pickle hands its buffer to us."""

    __slots__ = ("value",)

    def __init__(self, value: bytes | bytearray | memoryview) -> None:
        self.value = value

    def __reduce_ex__(self, protocol: object) -> tuple[Any, ...]:
        value = self.value
        layout = (value.format, value.shape) if isinstance(value, memoryview) else None
        return (_rebuild, (type(value).__name__, pickle.PickleBuffer(value), layout))


def _rebuild(kind: str, buffer: Any, layout: tuple[str, tuple[int, ...]] | None = None) -> Any:
    """The receiving side of :class:`_OutOfBand`: the value again, of its type (a memoryview
    with its format and shape)."""
    if kind == "bytes":
        return bytes(buffer)
    if kind == "bytearray":
        return bytearray(buffer)
    view = memoryview(buffer).cast("B")
    return view.cast(*layout) if layout is not None else view  # type: ignore[call-overload]


def _outline(obj: Any, depth: int = 2) -> Any:
    """``obj`` with its large bytes-like values (at most ``depth`` levels down in small tuples,
    lists and dicts) wrapped to travel out of band; ``obj`` itself when there are none."""
    kind = type(obj)
    if kind in _BYTES_LIKE:
        view = memoryview(obj)
        # C order only: a memoryview is rebuilt by casting flat bytes to its shape.
        return _OutOfBand(obj) if view.nbytes >= OOB_THRESHOLD and view.c_contiguous else obj
    if not depth or kind not in (tuple, list, dict) or len(obj) > _SEARCH_LIMIT:
        return obj
    if kind is dict:
        values = {key: _outline(value, depth - 1) for key, value in obj.items()}
        changed = any(values[key] is not value for key, value in obj.items())
        return values if changed else obj
    items = [_outline(item, depth - 1) for item in obj]
    changed = any(new is not old for new, old in zip(items, obj, strict=True))
    return kind(items) if changed else obj


def dumps(
    obj: Any,
    pool: SegmentPool | None,
    pickler: Callable[..., bytes] = pickle.dumps,
) -> tuple[bytes, list[Segment]]:
    """Pickle ``obj`` with its large buffers in segments of ``pool`` (in band if None)."""
    if pool is None or not hasattr(os, "memfd_create"):
        return pickler(obj, protocol=_PROTOCOL), []
    obj = _outline(obj)
    segments: list[Segment] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        try:
            raw = buffer.raw()
        except BufferError:
            return True  # not contiguous: pickle copies it in band
        if raw.nbytes < OOB_THRESHOLD:
            return True
        segments.append(pool.take(raw, segments))
        return False

    try:
        data = pickler(obj, protocol=_PROTOCOL, buffer_callback=out_of_band)
    except BaseException:
        pool.give_back((s.sid for s in segments), reusable=True)
        raise
    return data, segments


class Lent:
    """Views of received segments handed to unpickling, watched until nothing refers to them.

    Each transfer maps its segments afresh, so that "nothing refers to them" can be told for
    sure: a mapping refuses to close while any view of its memory lives, however it was made
    (``memoryview(view)``, a numpy array's base, a slice of either).
    """

    __slots__ = ("decoded", "maps", "sids", "views")

    def __init__(self, sids: list[int], maps: list[mmap.mmap]) -> None:
        self.sids = sids
        self.maps = maps
        self.views = [memoryview(mm) for mm in maps]
        self.decoded = False  # unpickled from: until then, nothing refers to the views yet

    def try_release(self) -> bool:
        """Unmap the segments if nothing refers to their memory any more; True once done."""
        if not self.decoded:
            return False
        try:
            for view in self.views:
                view.release()  # refused while an object holds a buffer exported from it
        except BufferError:
            return False
        self.views = []
        try:
            for mm in self.maps:
                mm.close()  # refused while any view made from its memory lives
        except BufferError:
            return False
        self.maps = []
        return True


class SegmentMaps:
    """The receiving side: a descriptor of each segment a sender lent, kept for its reuses.

    Thread-safe: the parent maps results in consumers' threads and checks releases on the
    scheduler thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fds: dict[int, int] = {}

    def views(self, refs: Iterable[SegmentRef], fds: list[int]) -> Lent:
        """Map the segments (``fds`` for those sent with a descriptor) for one transfer."""
        fds = list(fds)
        sids: list[int] = []
        maps: list[mmap.mmap] = []
        with self._lock:
            for ref in refs:
                if ref.has_fd:
                    stale = self._fds.pop(ref.sid, None)
                    if stale is not None:
                        os.close(stale)
                    self._fds[ref.sid] = fds.pop(0)
                # No MAP_POPULATE here: fault-around maps pages in sixteens as they are read.
                maps.append(mmap.mmap(self._fds[ref.sid], ref.length, flags=mmap.MAP_SHARED))
                sids.append(ref.sid)
        return Lent(sids, maps)

    def forget(self, sids: Iterable[int]) -> None:
        """The sender closed these segments, or a view of them was kept: drop them here (a
        mapping still viewed lives on with its views)."""
        with self._lock:
            for sid in sids:
                fd = self._fds.pop(sid, None)
                if fd is not None:
                    os.close(fd)

    def close(self) -> None:
        self.forget(list(self._fds))


def loads(data: bytes | memoryview, lent: Lent | None) -> Any:
    """Unpickle what :func:`dumps` made, its buffers read from the received segments."""
    if lent is None:
        return pickle.loads(data)
    try:
        return pickle.loads(data, buffers=list(lent.views))
    finally:
        lent.decoded = True
