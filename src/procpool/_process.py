"""``procpool.Process``: the standard library's Process, with callables that travel by value.

Under the spawn and forkserver start methods the standard library pickles a process's
``target`` by reference, so a lambda, a closure or a function typed into a REPL cannot be a
target. procpool's Process pickles its target with cloudpickle instead; everything else (the
arguments, which may hold queues and pipes, and the process's bookkeeping) goes through the
standard library's own pickler, so those keep working as they do there.
"""

from __future__ import annotations

import multiprocessing
import pickle
from multiprocessing.process import BaseProcess
from typing import Any

from ._start_method import default_method, get_start_method, set_start_method
from ._zygote import Popen

__all__ = ["ForkProcess", "ForkServerProcess", "Process", "SpawnProcess"]


class Process(BaseProcess):
    """A process running ``target(*args, **kwargs)``, or a subclass's ``run()``.

    It starts with procpool's current start method (see ``procpool.set_start_method``); the
    ``ForkProcess``, ``SpawnProcess`` and ``ForkServerProcess`` subclasses fix one.
    """

    _start_method: str | None = None

    @staticmethod
    def _Popen(process_obj: BaseProcess) -> Any:
        method = process_obj._start_method or default_method()  # type: ignore[attr-defined]
        if method == "forkserver":
            # procpool's own fork server: a fork of this program where safe (see _zygote).
            return Popen(process_obj)
        return multiprocessing.get_context(method).Process._Popen(process_obj)  # type: ignore[attr-defined]

    def __getstate__(self) -> dict[str, Any]:
        # Imported here: only the parent pickles a process, and a worker process, which
        # unpickles one, must not import the serialisation (and error) machinery for it.
        from ._serialize import dumps_for_child

        state = self.__dict__.copy()
        target = state.get("_target")
        if target is not None:
            state["_target"] = _ByValue(dumps_for_child(target))
        # A child started by spawn or forkserver begins with procpool's defaults: pass on the
        # start method chosen here, as the standard library passes on its own.
        state["_procpool_start_method"] = get_start_method(allow_none=True)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        method = state.pop("_procpool_start_method", None)
        if method is not None and get_start_method(allow_none=True) is None:
            set_start_method(method)
        target = state.get("_target")
        if isinstance(target, _ByValue):
            state["_target"] = pickle.loads(target.blob)
        self.__dict__.update(state)


class _ByValue:
    """A callable already pickled by value, carried inside a process object."""

    __slots__ = ("blob",)

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def __reduce__(self) -> tuple[type[_ByValue], tuple[bytes]]:
        return (_ByValue, (self.blob,))


class ForkProcess(Process):
    _start_method = "fork"


class SpawnProcess(Process):
    _start_method = "spawn"


class ForkServerProcess(Process):
    _start_method = "forkserver"
