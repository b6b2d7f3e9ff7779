"""The messages between the scheduler and one worker, shared by both sides.

Each worker has its own channel (a Unix socket pair framed by ``_channel.Channel``); a frame's
kind says what it is:

    scheduler -> worker   TASKS     pickle([wire task, ...])    tasks to run, in this order
                          STOP                                  run what is queued, then exit
                          RECALL    pickle([task id, ...])      give back these if not started
                          RELEASE   pickle([segment id, ...])   result segments free for reuse
                          FORGET    pickle([segment id, ...])   argument segments now closed
    worker -> scheduler   READY     [fd of its call marker]     the initializer has run
                          INIT      encoded exception           the initializer raised
                          DONE      header + refs + payload     one task's outcome
                          RECALLED  pickle([task id, ...])      the recalled tasks not started
                          FORGET    pickle([segment id, ...])   result segments now closed

A wire task is ``(task id, mode, function, arguments, retry_on, return_exceptions, segments,
fallen)``;
``function`` and ``arguments`` are pickles of their own, made in the caller's thread, so the
scheduler thread never runs user pickling code. ``function`` is empty when it is the same as
the previous task's sent to that worker (a map's chunks, a loop of apply calls), so a function
that carries a large value (a ``partial`` over an array, say) travels once, not once a task.
Large buffers of the arguments or of a result travel in shared-memory segments (``_shm``), named
by :class:`~procpool._shm.SegmentRef` and their descriptors sent with the frame. Results stream
back one DONE frame each, as tasks finish, so a worker killed mid-queue has reported everything
it completed. A task whose items fail alone (``return_exceptions``) marks, in a page of shared
memory (the :class:`CallMarker` whose descriptor came with READY), which of its items the worker
is calling: should the worker die, the scheduler reads there which item killed it, and fails
that item alone (``fallen``: the items the worker must not call again, their exceptions encoded).

This module is imported by workers: it uses the standard library only.
"""

from __future__ import annotations

import mmap
import os
import pickle
import struct
import traceback
from enum import IntEnum
from typing import Any, NamedTuple

from ._shm import SegmentRef

PROTOCOL = 5

TASKS = ord("T")
STOP = ord("S")
RECALL = ord("C")
RELEASE = ord("L")
FORGET = ord("F")
READY = ord("R")
INIT_FAILED = ord("I")
DONE = ord("D")
RECALLED = ord("B")

# task id, status, resident bytes (0: not measured), seconds it ran, whether the worker let go
# of the task's argument segments, number of result segments.
_DONE_HEADER = struct.Struct("!QBQdBH")
_REF = struct.Struct("!QQB")
# A call marker: the task id and the item of it being called (native order: one machine).
_MARK = struct.Struct("qq")


class Mode(IntEnum):
    """How a task's arguments blob is applied to its function."""

    APPLY = 0  # (args, kwds): one call
    MAP = 1  # [item, ...]: one call per item, results as a list
    STARMAP = 2  # [(args...), ...]: one call per tuple, results as a list


class Status(IntEnum):
    """How a task ended, as the worker reports it."""

    OK = 0  # payload: pickle of the result (a list for MAP and STARMAP)
    ERROR = 1  # payload: encode_exception(exc) of what the task raised
    UNDECODABLE = 2  # payload: encode_exception(exc) of why the task could not be unpickled
    # The task raised one of its retry_on exceptions: payload as for ERROR, or for OK when the
    # task returns exceptions in place (then at least one item raised one of them).
    RETRY = 3


_STATUSES = tuple(Status)  # by value: cheaper than calling the enum for each report


class WireTask(NamedTuple):
    """One unit of work as it travels to a worker."""

    task_id: int
    mode: Mode
    function: bytes
    arguments: bytes
    retry_on: bytes = b""  # pickled tuple of exception types worth a retry; b"": none
    return_exceptions: bool = False  # MAP/STARMAP: an item that raises yields a RaisedItem
    segments: tuple[SegmentRef, ...] = ()  # the arguments' out-of-band buffers
    # return_exceptions: items not to call, each with its encoded exception (they killed a
    # worker): (item, encode_exception(error)), ...
    fallen: tuple[tuple[int, bytes], ...] = ()


class Done(NamedTuple):
    """One task's outcome as a DONE frame carries it."""

    task_id: int
    status: Status
    resident: int  # the worker's resident bytes, 0 when not measured this time
    elapsed: float  # seconds the task ran
    released: bool  # the worker holds nothing of the task's argument segments any more
    segments: tuple[SegmentRef, ...]  # the result's out-of-band buffers
    payload: memoryview


def pack_ids(ids: list[int]) -> bytes:
    """The body of RECALL, RECALLED, RELEASE and FORGET frames."""
    return pickle.dumps(ids, protocol=PROTOCOL)


def unpack_ids(body: memoryview) -> list[int]:
    ids: list[int] = pickle.loads(body)
    return ids


def pack_tasks(tasks: list[WireTask]) -> bytes:
    """The body of a TASKS frame."""
    return pickle.dumps([tuple(t) for t in tasks], protocol=PROTOCOL)


def unpack_tasks(body: memoryview) -> list[WireTask]:
    return [WireTask(*t) for t in pickle.loads(body)]


def done_header(
    task_id: int,
    status: Status,
    resident: int = 0,
    elapsed: float = 0.0,
    released: bool = True,
    segments: tuple[SegmentRef, ...] = (),
) -> bytes:
    """The start of a DONE frame's body; the payload follows it."""
    head = _DONE_HEADER.pack(task_id, status, resident, elapsed, released, len(segments))
    return head + b"".join(_REF.pack(*ref) for ref in segments)


def unpack_done(body: memoryview) -> Done:
    """Read a DONE body; the payload stays a view into it until someone decodes it."""
    task_id, status, resident, elapsed, released, count = _DONE_HEADER.unpack_from(body)
    offset = _DONE_HEADER.size
    refs = []
    for _ in range(count):
        sid, length, has_fd = _REF.unpack_from(body, offset)
        refs.append(SegmentRef(sid, length, bool(has_fd)))
        offset += _REF.size
    return Done(
        task_id, _STATUSES[status], resident, elapsed, bool(released), tuple(refs), body[offset:]
    )


class RaisedItem:
    """Stands in a result list for an item whose call raised (``return_exceptions``)."""

    __slots__ = ("payload", "retryable")

    def __init__(self, payload: bytes, retryable: bool = False) -> None:
        self.payload = payload  # encode_exception() of what the call raised
        self.retryable = retryable

    def __reduce__(self) -> tuple[type[RaisedItem], tuple[bytes, bool]]:
        return (RaisedItem, (self.payload, self.retryable))


# Whether local workers can say which item killed them (CallMarker needs memfd_create).
ITEMS_MARKED = hasattr(os, "memfd_create")


class CallMarker:
    """Which item of which task a worker is calling, in a page of memory its scheduler shares.

    The worker creates it (an anonymous ``memfd``, so nothing outlives the two processes) and
    sends its descriptor with READY; it marks each item of a task whose items fail alone before
    calling it, and the item count once past the last. Should the worker die, the scheduler reads
    the mark to learn which item killed it. Only where ``memfd_create`` exists (Linux).
    """

    def __init__(self, fd: int) -> None:
        self._map = mmap.mmap(fd, _MARK.size)

    @classmethod
    def create(cls) -> tuple[CallMarker, int] | None:
        """A new marker and its descriptor (to send, then close); None without memfd, or if
        the system refuses one (no descriptor or memory left): the worker then runs without,
        and a death fails the whole task it was running."""
        if not ITEMS_MARKED:
            return None
        try:
            fd = os.memfd_create("procpool-marker", os.MFD_CLOEXEC)
        except OSError:
            return None
        try:
            os.ftruncate(fd, _MARK.size)
            marker = cls(fd)
        except OSError:
            os.close(fd)
            return None
        marker.mark(-1, -1)  # no task has an id below 0
        return marker, fd

    def mark(self, task_id: int, item: int) -> None:
        _MARK.pack_into(self._map, 0, task_id, item)

    def read(self) -> tuple[int, int]:
        """The task id and item last marked."""
        task_id, item = _MARK.unpack_from(self._map)
        return task_id, item

    def close(self) -> None:
        self._map.close()


def encode_exception(exc: BaseException, with_traceback: bool = True) -> bytes:
    """Pickle an exception with its formatted traceback, so the caller sees where it failed
    (``with_traceback`` False: an exception that was never raised, made by the scheduler).

    An exception that cannot be pickled is replaced by the standard library's
    ``MaybeEncodingError``, which carries the reprs of both, as ``multiprocessing.Pool`` does.
    """
    tb_text = (
        "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if with_traceback
        else ""
    )
    summary = f"{type(exc).__qualname__}: {exc}"
    try:
        exc_bytes = pickle.dumps(exc, protocol=PROTOCOL)
    except Exception as pickling_error:
        exc_bytes = pickle.dumps(encoding_error(pickling_error, exc), protocol=PROTOCOL)
    return pickle.dumps((exc_bytes, tb_text, summary), protocol=PROTOCOL)


def encoding_error(error: BaseException, value: Any) -> BaseException:
    """The standard library's error for a value that could not be pickled, naming both."""
    # Imported here: multiprocessing.pool is only needed on this rare path.
    from multiprocessing.pool import MaybeEncodingError  # type: ignore[attr-defined]

    exc: BaseException = MaybeEncodingError(error, value)
    return exc


def decode_exception_parts(payload: bytes | memoryview) -> tuple[bytes, str, str]:
    """Split an encoded exception into its pickle, its traceback text and a one-line summary."""
    exc_bytes, tb_text, summary = pickle.loads(payload)
    return exc_bytes, tb_text, summary
