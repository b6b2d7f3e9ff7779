"""The loop a worker process runs: read a batch of tasks, run each, send each outcome back.

Workers import little (the standard library and ``_protocol``), so they start fast. A worker
exits when the scheduler says STOP, when its channel closes, or at once when the parent process
dies: a watchdog thread blocks on a lifeline pipe whose only writer is the parent.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from itertools import starmap
from multiprocessing.connection import Connection
from typing import Any

from ._protocol import (
    INIT_FAILED,
    PROTOCOL,
    READY,
    STOP,
    Mode,
    RaisedItem,
    Status,
    WireTask,
    encode_exception,
    encoding_error,
    pack_done,
    unpack_tasks,
)

# Exit status of a worker whose parent died: nobody is left to read it, but a core dump or a
# process accounting record then says why.
_ORPHANED = 70

# How often a worker samples its memory when nobody caps it (seconds), and the unit it counts in.
_SAMPLE_INTERVAL = 0.5
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def worker_main(
    conn: Connection,
    lifeline: Connection,
    inherited_fds: tuple[int, ...],
    init: tuple[bytes, tuple[Any, ...]] | None,
    measure_every_task: bool = False,
) -> None:
    """Entry point of a worker process (the ``target`` of its ``Process``).

    ``inherited_fds`` are the parent's ends of other channels that a forked child inherits; closing
    them lets the lifeline and those channels report EOF when their real owner goes away.
    ``measure_every_task``: report resident memory after every task (the pool caps it).
    """
    for fd in inherited_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    # Ctrl-C in a terminal reaches the whole process group: the parent handles it and stops the
    # workers, so a worker must not die of it mid-task or print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(lifeline,), daemon=True).start()
    if init is not None and not _run_initializer(conn, init):
        return
    conn.send_bytes(READY)
    _serve(conn, _Memory(measure_every_task))


def _exit_when_orphaned(lifeline: Connection) -> None:
    try:
        lifeline.recv_bytes()
    except (EOFError, OSError):
        pass
    os._exit(_ORPHANED)


def _run_initializer(conn: Connection, init: tuple[bytes, tuple[Any, ...]]) -> bool:
    function, initargs = init
    try:
        pickle.loads(function)(*initargs)
    except BaseException as exc:
        conn.send_bytes(INIT_FAILED + encode_exception(exc))
        return False
    return True


def _serve(conn: Connection, memory: _Memory) -> None:
    cache = _FunctionCache()
    while True:
        try:
            frame = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the scheduler has gone: nothing left to do
        if frame[:1] == STOP:
            return
        for task in unpack_tasks(frame):
            status, payload = _run(task, cache)
            conn.send_bytes(pack_done(task.task_id, status, payload, memory.sample()))


class _Memory:
    """Samples this process's resident memory for the scheduler: after every task when the pool
    caps memory per worker, else at most twice a second (to name the figure should the worker be
    killed, by the out-of-memory killer say)."""

    def __init__(self, every_task: bool) -> None:
        try:
            self._fd: int | None = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._fd = None  # not Linux: no figure
        self._every_task = every_task
        self._next = 0.0

    def sample(self) -> int:
        """Resident bytes now, or 0 when not measured this time."""
        if self._fd is None:
            return 0
        if not self._every_task:
            now = time.monotonic()
            if now < self._next:
                return 0
            self._next = now + _SAMPLE_INTERVAL
        return int(os.pread(self._fd, 128, 0).split()[1]) * _PAGE_SIZE


class _FunctionCache:
    """Keeps the last function unpickled: a map sends the same function with every chunk."""

    def __init__(self) -> None:
        self._blob = b""
        self._function: Any = None

    def get(self, blob: bytes) -> Any:
        if blob != self._blob:
            self._function = pickle.loads(blob)
            self._blob = blob
        return self._function


def _run(task: WireTask, cache: _FunctionCache) -> tuple[Status, bytes]:
    try:
        function = cache.get(task.function)
        arguments = pickle.loads(task.arguments)
        retry_on = pickle.loads(task.retry_on) if task.retry_on else ()
    except BaseException as exc:
        return Status.UNDECODABLE, encode_exception(exc)
    try:
        if task.return_exceptions:
            result = _call_each(task.mode, function, arguments, retry_on)
        else:
            result = _call(task.mode, function, arguments)
    except BaseException as exc:
        status = Status.RETRY if isinstance(exc, retry_on) else Status.ERROR
        return status, encode_exception(exc)
    del arguments
    try:
        payload = pickle.dumps(result, protocol=PROTOCOL)
    except Exception as exc:
        return Status.ERROR, encode_exception(encoding_error(exc, result))
    if task.return_exceptions and any(isinstance(r, RaisedItem) and r.retryable for r in result):
        return Status.RETRY, payload
    return Status.OK, payload


def _call(mode: Mode, function: Any, arguments: Any) -> Any:
    if mode == Mode.APPLY:
        args, kwds = arguments
        return function(*args, **kwds)
    if mode == Mode.MAP:
        return list(map(function, arguments))
    return list(starmap(function, arguments))


def _call_each(
    mode: Mode, function: Any, arguments: Any, retry_on: tuple[type[BaseException], ...]
) -> list[Any]:
    """Call the function on each item; an item that raises leaves a RaisedItem in its place."""
    results: list[Any] = []
    for item in arguments:
        try:
            results.append(function(*item) if mode == Mode.STARMAP else function(item))
        except BaseException as exc:
            results.append(RaisedItem(encode_exception(exc), isinstance(exc, retry_on)))
    return results
