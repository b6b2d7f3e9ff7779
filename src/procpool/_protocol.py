"""The wire format between the scheduler and one worker, shared by both sides.

Each worker has its own duplex channel (a ``multiprocessing.connection`` socket pair); every
message is one ``send_bytes`` frame whose first byte says what it is:

    scheduler -> worker   TASKS   b"T" + pickle([WireTask, ...])
                          STOP    b"S"                      finish the current batch, then exit
    worker -> scheduler   READY   b"R"                      the initializer has run
                          INIT    b"I" + encoded exception  the initializer raised
                          DONE    b"D" + header + payload   one task's outcome; the header
                                                            also carries the worker's resident
                                                            memory, when it measured it

A batch holds one or more tasks; the worker answers each with its own DONE frame, so results
stream back while the batch runs. ``function`` and ``arguments`` are pickles of their own, made in
the caller's thread, so the scheduler thread never runs user pickling code. Large buffers can later
travel out of band beside a frame without changing this framing.

This module is imported by workers: it uses the standard library only.
"""

from __future__ import annotations

import pickle
import struct
import traceback
from enum import IntEnum
from typing import Any, NamedTuple

PROTOCOL = 5

TASKS = b"T"
STOP = b"S"
READY = b"R"
INIT_FAILED = b"I"
DONE = b"D"

_DONE_HEADER = struct.Struct("!QBQ")  # task id, status, resident bytes (0: not measured)


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


class WireTask(NamedTuple):
    """One unit of work as it travels to a worker."""

    task_id: int
    mode: Mode
    function: bytes
    arguments: bytes
    retry_on: bytes = b""  # pickled tuple of exception types worth a retry; b"": none
    return_exceptions: bool = False  # MAP/STARMAP: an item that raises yields a RaisedItem


def pack_tasks(tasks: list[WireTask]) -> bytes:
    """Frame a batch of tasks for one worker."""
    return TASKS + pickle.dumps([tuple(t) for t in tasks], protocol=PROTOCOL)


def unpack_tasks(frame: bytes) -> list[WireTask]:
    """Read a TASKS frame back into tasks."""
    return [WireTask(*t) for t in pickle.loads(memoryview(frame)[1:])]


def pack_done(task_id: int, status: Status, payload: bytes, resident: int = 0) -> bytes:
    """Frame one task's outcome."""
    return DONE + _DONE_HEADER.pack(task_id, status, resident) + payload


def unpack_done(frame: bytes) -> tuple[int, Status, int, memoryview]:
    """Read a DONE frame; the payload stays a view into the frame until someone decodes it."""
    task_id, status, resident = _DONE_HEADER.unpack_from(frame, 1)
    return task_id, Status(status), resident, memoryview(frame)[1 + _DONE_HEADER.size :]


class RaisedItem:
    """Stands in a result list for an item whose call raised (``return_exceptions``)."""

    __slots__ = ("payload", "retryable")

    def __init__(self, payload: bytes, retryable: bool = False) -> None:
        self.payload = payload  # encode_exception() of what the call raised
        self.retryable = retryable

    def __reduce__(self) -> tuple[type[RaisedItem], tuple[bytes, bool]]:
        return (RaisedItem, (self.payload, self.retryable))


def encode_exception(exc: BaseException) -> bytes:
    """Pickle an exception with its formatted traceback, so the caller sees where it failed.

    An exception that cannot be pickled is replaced by the standard library's
    ``MaybeEncodingError``, which carries the reprs of both, as ``multiprocessing.Pool`` does.
    """
    tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
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
