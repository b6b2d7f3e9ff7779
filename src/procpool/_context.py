"""Start methods: procpool's default, and contexts that pair procpool's Pool and Process with
the standard library's synchronisation primitives.

The default start method is ``forkserver`` where the platform has it, ``spawn`` elsewhere. A pool
keeps a scheduler thread in the parent, and forking a process that has threads can copy a lock
that another thread holds, deadlocking the child (Python 3.12 warns about it; 3.14 made
forkserver Linux's default too). A fork server is a small single-threaded process that forks
each new worker from a clean state, so respawning a worker stays fast (no new interpreter to
boot, unlike spawn). ``fork`` stays available through ``get_context("fork")`` or
``set_start_method("fork")`` for code that relies on inheriting state.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.context import BaseContext
from typing import TYPE_CHECKING, Any

from ._cpu import cpu_count
from ._process import ForkProcess, ForkServerProcess, Process, SpawnProcess
from ._start_method import default_method, platform_default

if TYPE_CHECKING:
    from ._pool import Pool

__all__ = ["Context", "get_all_start_methods", "get_context"]

_PROCESS_CLASSES: dict[str, type[Process]] = {
    "fork": ForkProcess,
    "spawn": SpawnProcess,
    "forkserver": ForkServerProcess,
}


def get_all_start_methods() -> list[str]:
    """The start methods this platform supports, procpool's default first."""
    methods: list[str] = multiprocessing.get_all_start_methods()
    default = platform_default()
    return [default] + [m for m in methods if m != default]


class Context:
    """One start method: procpool's ``Pool`` and ``Process``, the standard library's primitives.

    Attributes procpool does not define (``Queue``, ``Lock``, ``Manager``, ``Value``...) come from
    the standard library's context for the same start method, so objects made here can be
    shared with this context's processes.
    """

    def __init__(self, method: str) -> None:
        self._mp: BaseContext = multiprocessing.get_context(method)
        self._method = method
        self.Process: type[Process] = _PROCESS_CLASSES[method]

    def __repr__(self) -> str:
        return f"<procpool.Context {self._method!r}>"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._mp, name)

    def get_start_method(self, allow_none: bool = False) -> str:
        return self._method

    def get_context(self, method: str | None = None) -> Context:
        return get_context(method)

    def cpu_count(self) -> int:
        return cpu_count()

    def Pool(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        maxtasksperchild: int | None = None,
    ) -> Pool:
        from ._pool import Pool

        return Pool(processes, initializer, initargs, maxtasksperchild, context=self)

    def Manager(self) -> Any:
        """A started ``SyncManager`` whose ``Pool()`` is procpool's (``procpool.managers``)."""
        from .managers import SyncManager

        manager = SyncManager(ctx=self._mp)
        manager.start()
        return manager


_contexts: dict[str, Context] = {}


def get_context(method: str | None = None) -> Context:
    """The context for ``method`` (None: the current default start method)."""
    method = method or default_method()
    if method not in multiprocessing.get_all_start_methods():
        raise ValueError(f"cannot find context for {method!r}")
    if method not in _contexts:
        _contexts[method] = Context(method)
    return _contexts[method]
