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
from itertools import starmap
from multiprocessing.connection import Connection
from typing import Any

from ._protocol import (
    INIT_FAILED,
    PROTOCOL,
    READY,
    STOP,
    Mode,
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


def worker_main(
    conn: Connection,
    lifeline: Connection,
    inherited_fds: tuple[int, ...],
    init: tuple[bytes, tuple[Any, ...]] | None,
) -> None:
    """Entry point of a worker process (the ``target`` of its ``Process``).

    ``inherited_fds`` are the parent's ends of other channels that a forked child inherits; closing
    them lets the lifeline and those channels report EOF when their real owner goes away.
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
    _serve(conn)


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


def _serve(conn: Connection) -> None:
    cache = _FunctionCache()
    while True:
        try:
            frame = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the scheduler has gone: nothing left to do
        if frame[:1] == STOP:
            return
        for task in unpack_tasks(frame):
            conn.send_bytes(_run(task, cache))


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


def _run(task: WireTask, cache: _FunctionCache) -> bytes:
    try:
        function = cache.get(task.function)
        arguments = pickle.loads(task.arguments)
    except BaseException as exc:
        return pack_done(task.task_id, Status.UNDECODABLE, encode_exception(exc))
    try:
        result = _call(task.mode, function, arguments)
    except BaseException as exc:
        return pack_done(task.task_id, Status.ERROR, encode_exception(exc))
    del arguments
    try:
        payload = pickle.dumps(result, protocol=PROTOCOL)
    except Exception as exc:
        return pack_done(task.task_id, Status.ERROR, encode_exception(encoding_error(exc, result)))
    return pack_done(task.task_id, Status.OK, payload)


def _call(mode: Mode, function: Any, arguments: Any) -> Any:
    if mode == Mode.APPLY:
        args, kwds = arguments
        return function(*args, **kwds)
    if mode == Mode.MAP:
        return list(map(function, arguments))
    return list(starmap(function, arguments))
