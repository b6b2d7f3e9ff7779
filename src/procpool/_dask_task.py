"""What runs on a Dask worker for procpool's Dask backend: one task, and the pool's initializer.

A procpool task reaches Dask as a call of :func:`run_task` with the task's function and arguments
still pickled, exactly as the local backend sends them to its workers; it runs them the way a
local worker does (``_inband.run_inband``) and returns ``(status, payload, seconds)`` with
the outcome still pickled, so the caller's thread unpickles results and exceptions lazily, as it
does for the local backend.

Dask workers must have procpool installed: they import this module by name. (Only the Dask
backend imports it: it needs ``distributed``.)
"""

from __future__ import annotations

import ctypes
import pickle
import threading
import time
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from ._inband import run_inband
from ._protocol import Mode, WireTask, encode_exception

__all__ = ["INIT_FAILED", "TIMED_OUT", "Initializer", "run_task", "started_topic"]

# Statuses of a Dask task beyond the local worker's ``Status`` values.
TIMED_OUT = 100  # the call ran past its deadline; payload empty
INIT_FAILED = 101  # the pool's initializer raised in this worker process; payload: the exception

# The initializers run in this process: plugin name -> the encoded exception it raised, or None.
_initialized: dict[str, bytes | None] = {}


class _Stopped(BaseException):
    """Raised inside a call that ran past its deadline, to stop it (pure Python code only)."""


def started_topic(pool_name: str) -> str:
    """The Dask event topic on which a pool's tasks say they started."""
    return f"{pool_name}-started"


def run_task(
    pool_name: str,
    function: bytes,
    arguments: bytes,
    mode: int,
    retry_on: bytes,
    return_exceptions: bool,
    timeout: float | None,
) -> tuple[int, bytes, float]:
    """Run one procpool task on this Dask worker: ``(status, payload, seconds it ran)``.

    It first tells the pool (a Dask event) that it started here, so that should this worker die,
    the pool fails this task rather than let Dask run it again unseen.
    """
    _announce_start(pool_name)
    error = _initialized.get(pool_name)
    if error is not None:
        return INIT_FAILED, error, 0.0
    task = WireTask(0, Mode(mode), function, arguments, retry_on, return_exceptions)
    started = time.perf_counter()
    if timeout is None:
        status, payload = run_inband(task)
    else:
        status, payload = _run_with_deadline(task, timeout)
    return status, payload, time.perf_counter() - started


def _announce_start(pool_name: str) -> None:
    from distributed import get_worker

    worker = get_worker()
    worker.log_event(started_topic(pool_name), (worker.get_current_task(), worker.address))


def _run_with_deadline(task: WireTask, timeout: float) -> tuple[int, bytes]:
    """Run the task on a thread of its own and give up on it at its deadline.

    At the deadline the call is interrupted with an asynchronous exception: that stops Python
    code at its next bytecode, but a call blocked in native code (a sleep, a read) goes on until
    it returns to Python. Either way this Dask task ends at the deadline and frees its slot.
    """
    outcome: list[tuple[int, bytes]] = []
    thread = threading.Thread(
        target=lambda: outcome.append(run_inband(task)), name="procpool-task", daemon=True
    )
    thread.start()
    thread.join(timeout)
    if outcome:
        return outcome[0]
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(_Stopped)
        )
    return TIMED_OUT, b""


class Initializer(WorkerPlugin):
    """Runs a pool's initializer once in each Dask worker process, also in those that join the
    cluster later. An initializer that raises does not stop the worker (Dask would start it again
    and again): the exception is kept, and the pool's tasks there report it."""

    def __init__(self, name: str, function: bytes, initargs: tuple[Any, ...]) -> None:
        self.name = name
        self._function = function
        self._initargs = initargs

    def setup(self, worker: Any) -> None:
        try:
            pickle.loads(self._function)(*self._initargs)
        except BaseException as exc:
            _initialized[self.name] = encode_exception(exc)
        else:
            _initialized[self.name] = None

    def teardown(self, worker: Any) -> None:
        _initialized.pop(self.name, None)
