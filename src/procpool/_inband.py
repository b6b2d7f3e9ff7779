"""Running one task in the current process, its outcome pickled in band.

Local workers run tasks with shared-memory buffers and report over their channel; a backend
without procpool's worker processes (a Dask task, a test's inline backend) runs the same code
here: ``_worker._Worker._run`` (same modes, ``retry_on`` and ``return_exceptions`` handling, the
same ``MaybeEncodingError`` for a result that will not pickle), with no shared memory, so the
outcome comes back as ``(status, payload)`` for the caller's result sink to unpickle lazily.
"""

from __future__ import annotations

import threading

from ._protocol import WireTask
from ._worker import _FunctionCache, _Worker

__all__ = ["run_inband"]


class _Runner(threading.local):
    """What ``_Worker._run`` needs of a worker, one per thread (a Dask worker runs tasks on
    several): the last function unpickled, and no shared-memory segments."""

    def __init__(self) -> None:
        self._functions = _FunctionCache()
        self._results = None
        self._marker = None  # no process of its own to lose: no item to mark


_runner = _Runner()


def run_inband(task: WireTask) -> tuple[int, bytes]:
    """Run the task here: ``(status, payload)``, ``payload`` the pickled result or exception."""
    status, payload, _, _ = _Worker._run(_runner, task, None)  # type: ignore[arg-type]
    return int(status), bytes(payload)
