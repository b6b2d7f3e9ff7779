"""procpool's exceptions.

Every error procpool raises on its own account derives from :class:`ProcpoolError`, which is a
:class:`multiprocessing.ProcessError`, so existing ``except multiprocessing.ProcessError`` clauses
keep catching them::

    multiprocessing.ProcessError
    └── ProcpoolError
        ├── WorkerLostError        a worker died while it held the task (also a
        │                          concurrent.futures BrokenProcessPool: see the class)
        ├── TaskDecodeError        a task's function, arguments or outcome could not be unpickled
        ├── TaskTimeoutError       the task ran past its timeout and its worker was killed
        │                          (also a builtin TimeoutError)
        ├── TaskCancelledError     the caller cancelled the task (also a concurrent.futures
        │                          CancelledError)
        ├── PoolTerminatedError    terminate() ended the pool before the task finished
        └── BrokenPoolError        the pool cannot run tasks any more (also a
            │                      concurrent.futures BrokenProcessPool)
            └── InitializerError   the pool's initializer raised, or workers died on start-up

Errors the standard library already has keep its types: ``multiprocessing.TimeoutError`` from
``get(timeout)``, ``ValueError`` for a closed pool, ``multiprocessing.pool.MaybeEncodingError``
for a result or exception that cannot be pickled. A task's own exception is re-raised with its
type and arguments, the worker's traceback attached as ``__cause__`` (a
``multiprocessing.pool.RemoteTraceback``).
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from concurrent.futures import CancelledError
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import ProcessError

# typeshed omits these two, but they are public names of multiprocessing.pool.
from multiprocessing.pool import (  # type: ignore[attr-defined]
    MaybeEncodingError,
    RemoteTraceback,
)

__all__ = [
    "BrokenPoolError",
    "InitializerError",
    "MaybeEncodingError",
    "PoolTerminatedError",
    "ProcpoolError",
    "RemoteTraceback",
    "TaskCancelledError",
    "TaskDecodeError",
    "TaskTimeoutError",
    "WorkerLostError",
    "attach_remote_traceback",
    "attempts_note",
    "describe_exit",
]


class ProcpoolError(ProcessError):
    """Base class of the errors procpool raises on its own account."""


class WorkerLostError(ProcpoolError, BrokenProcessPool):
    """The worker process running the task died before it reported a result.

    The task is failed; every other task goes on, and the pool replaces the worker. It is also
    a ``concurrent.futures`` ``BrokenProcessPool``, the error the standard library's executor
    raises for a worker's death, so that ``except BrokenProcessPool`` clauses written for it
    keep catching the death; unlike there, the executor is not broken and takes more work.
    ``pid`` and ``exitcode`` (negative: the signal number) identify the death.
    """

    def __init__(self, message: str, pid: int | None = None, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode

    def __reduce__(self) -> tuple[type[WorkerLostError], tuple[str, int | None, int | None]]:
        return (type(self), (str(self), self.pid, self.exitcode))


class TaskDecodeError(ProcpoolError):
    """A task's function, arguments, result or exception could not be unpickled on arrival."""


class TaskTimeoutError(ProcpoolError, TimeoutError):
    """The task ran past its timeout; the worker running it was killed and replaced.

    Unlike ``AsyncResult.get(timeout)``, which only stops waiting, this timeout stops the task.
    """


class TaskCancelledError(ProcpoolError, CancelledError):
    """The task was cancelled (``AsyncResult.cancel()``) before it produced a result."""


class PoolTerminatedError(ProcpoolError):
    """The pool was terminated before the task produced a result."""


class BrokenPoolError(ProcpoolError, BrokenProcessPool):
    """The pool can no longer run tasks; every pending and future task fails with this error."""


class InitializerError(BrokenPoolError):
    """The pool's initializer raised (or workers kept dying on start-up).

    The standard library respawns such workers forever and the caller waits forever; procpool
    stops and reports the initializer's exception as ``__cause__``.
    """


# Signals whose death has a well-known likely cause worth naming in the message.
_SIGNAL_HINTS = {
    signal.SIGKILL: "was killed with SIGKILL: possibly the out-of-memory killer",
    signal.SIGSEGV: "crashed with a segmentation fault (SIGSEGV) in native code",
    signal.SIGBUS: "crashed with a bus error (SIGBUS): native code, or a truncated memory map",
    signal.SIGABRT: "aborted (SIGABRT): a failed assertion in native code",
    signal.SIGTERM: "was terminated with SIGTERM",
}


def describe_exit(exitcode: int | None) -> str:
    """Say in words how a process ended, from its ``exitcode`` (negative: killed by a signal)."""
    if exitcode is None:
        return "ended, exit status unknown"
    if exitcode >= 0:
        return f"exited with code {exitcode}"
    try:
        sig = signal.Signals(-exitcode)
    except ValueError:
        return f"was killed by signal {-exitcode}"
    return _SIGNAL_HINTS.get(sig, f"was killed by {sig.name}")


def attempts_note(attempts: Sequence[str]) -> str:
    """The note added to a task's final error when earlier attempts at it failed too."""
    lines = "\n".join(f"  attempt {i}: {what}" for i, what in enumerate(attempts, 1))
    return f"procpool: earlier attempts at this task failed:\n{lines}"


def attach_remote_traceback(exc: BaseException, tb_text: str) -> BaseException:
    """Attach a worker's formatted traceback to ``exc`` as its ``__cause__``.

    The cause is the standard library's ``RemoteTraceback`` so that code written against
    ``multiprocessing.pool`` recognises it, framed as the standard library frames it.
    """
    exc.__cause__ = RemoteTraceback(f'\n"""\n{tb_text}"""')
    return exc
