"""procpool: a drop-in for ``multiprocessing``'s Pool and Process that never hangs.

``from procpool import Pool`` gives the standard library's API; a worker that dies fails only its
own task (:class:`WorkerLostError`), the pool replaces it and goes on. See the README for the
deliberate differences from ``multiprocessing``.

``Pool`` and ``Process`` are procpool's own. The synchronisation and communication primitives
(``Queue``, ``Pipe``, ``Lock``, ``Manager``...) are the standard library's, made by the context of
procpool's current start method (``forkserver`` on Linux unless set otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from multiprocessing import (  # type: ignore[attr-defined]  # (typeshed lacks the two SUB*)
    SUBDEBUG,
    SUBWARNING,
    AuthenticationError,
    BufferTooShort,
    ProcessError,
    TimeoutError,
    active_children,
    allow_connection_pickling,
    current_process,
    freeze_support,
    get_logger,
    log_to_stderr,
    parent_process,
    reducer,
    set_executable,
    set_forkserver_preload,
)
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._context import Context, get_all_start_methods, get_context
    from ._cpu import cpu_count
    from ._errors import (
        BrokenPoolError,
        InitializerError,
        PoolTerminatedError,
        ProcpoolError,
        TaskCancelledError,
        TaskDecodeError,
        TaskTimeoutError,
        WorkerLostError,
    )
    from ._executor import Future, ProcessPoolExecutor
    from ._pool import Pool
    from ._process import Process
    from ._start_method import get_start_method, set_start_method

# procpool's own names, imported when first used: a worker process imports this package on its
# way to the few modules it runs (``_worker`` and the wire modules), and must not pay for the
# pool, the executor, ``concurrent.futures`` and the rest.
_LAZY = {
    "Context": "_context",
    "get_all_start_methods": "_context",
    "get_context": "_context",
    "cpu_count": "_cpu",
    "BrokenPoolError": "_errors",
    "InitializerError": "_errors",
    "PoolTerminatedError": "_errors",
    "ProcpoolError": "_errors",
    "TaskCancelledError": "_errors",
    "TaskDecodeError": "_errors",
    "TaskTimeoutError": "_errors",
    "WorkerLostError": "_errors",
    "Future": "_executor",
    "ProcessPoolExecutor": "_executor",
    "Pool": "_pool",
    "Process": "_process",
    "get_start_method": "_start_method",
    "set_start_method": "_start_method",
}

__version__ = "0.1.0"


def _from_context(name: str) -> Callable[..., Any]:
    def make(*args: Any, **kwargs: Any) -> Any:
        from ._context import get_context

        return getattr(get_context(), name)(*args, **kwargs)

    make.__name__ = make.__qualname__ = name
    make.__doc__ = f"The standard library's ``{name}``, from procpool's current start method."
    return make


Array = _from_context("Array")
Barrier = _from_context("Barrier")
BoundedSemaphore = _from_context("BoundedSemaphore")
Condition = _from_context("Condition")
Event = _from_context("Event")
JoinableQueue = _from_context("JoinableQueue")
Lock = _from_context("Lock")
Manager = _from_context("Manager")
Pipe = _from_context("Pipe")
Queue = _from_context("Queue")
RLock = _from_context("RLock")
RawArray = _from_context("RawArray")
RawValue = _from_context("RawValue")
Semaphore = _from_context("Semaphore")
SimpleQueue = _from_context("SimpleQueue")
Value = _from_context("Value")

# The submodules of ``multiprocessing``, reachable as attributes (``procpool.connection.wait``)
# as well as by import; each is imported when first asked for.
_SUBMODULES = frozenset(
    {
        "connection",
        "context",
        "dummy",
        "forkserver",
        "heap",
        "managers",
        "pool",
        "popen_fork",
        "popen_forkserver",
        "popen_spawn_posix",
        "popen_spawn_win32",
        "process",
        "queues",
        "reduction",
        "resource_sharer",
        "resource_tracker",
        "shared_memory",
        "sharedctypes",
        "spawn",
        "synchronize",
        "util",
    }
)


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # later lookups find it without coming here
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})


def _unpickling_a_process() -> bool:
    """Whether this import is a child process (spawn, fork server) unpickling the process object
    it runs, rather than a program that is about to use a pool."""
    import multiprocessing.process

    return bool(getattr(multiprocessing.process.current_process(), "_inheriting", False))


if not _unpickling_a_process():
    # A program imports procpool to make pools: load the pool now, as a program's imports are
    # loaded at its top, rather than in the middle of its first Pool() call.
    __getattr__("Pool")


__all__ = [
    "SUBDEBUG",
    "SUBWARNING",
    "Array",
    "AuthenticationError",
    "Barrier",
    "BoundedSemaphore",
    "BrokenPoolError",
    "BufferTooShort",
    "Condition",
    "Context",
    "Event",
    "Future",
    "InitializerError",
    "JoinableQueue",
    "Lock",
    "Manager",
    "Pipe",
    "Pool",
    "PoolTerminatedError",
    "Process",
    "ProcessError",
    "ProcessPoolExecutor",
    "ProcpoolError",
    "Queue",
    "RLock",
    "RawArray",
    "RawValue",
    "Semaphore",
    "SimpleQueue",
    "TaskCancelledError",
    "TaskDecodeError",
    "TaskTimeoutError",
    "TimeoutError",
    "Value",
    "WorkerLostError",
    "active_children",
    "allow_connection_pickling",
    "cpu_count",
    "current_process",
    "freeze_support",
    "get_all_start_methods",
    "get_context",
    "get_logger",
    "get_start_method",
    "log_to_stderr",
    "parent_process",
    "reducer",
    "set_executable",
    "set_forkserver_preload",
    "set_start_method",
]
