"""``procpool.Process``: the standard library's Process, with callables that travel by value
and a result that comes back.

Under the spawn and forkserver start methods the standard library pickles a process's
``target`` by reference, so a lambda, a closure or a function typed into a REPL cannot be a
target. procpool's Process pickles its target with cloudpickle instead; everything else (the
arguments, which may hold queues and pipes, and the process's bookkeeping) goes through the
standard library's own pickler, so those keep working as they do there.

``result()`` returns what the target (or a subclass's ``run()``) returned. The value travels
on a one-way pipe made by ``start()``: the child writes its outcome once, after ``run()``, and
the parent reads it while it joins (so a result larger than the pipe's buffer cannot block the
child's exit), then closes its end. The pipe's writing end reaches the child as the standard
library passes a ``Pipe`` argument: inherited under fork, handed over under spawn and
forkserver.
"""

from __future__ import annotations

import multiprocessing
import pickle
import threading
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FunctionType
from typing import Any

from ._protocol import PROTOCOL, encode_exception, encoding_error
from ._start_method import default_method, get_start_method, set_start_method
from ._zygote import new_popen

# The first byte of the outcome a child sends: what follows is a pickled value, or an
# encoded exception.
_RETURNED, _RAISED = b"r", b"e"
# Attributes of a started process that stay in the parent.
_PARENT_ONLY = ("_procpool_reader", "_procpool_outcome", "_procpool_lock")

__all__ = ["ForkProcess", "ForkServerProcess", "Process", "SpawnProcess"]


class Process(BaseProcess):
    """A process running ``target(*args, **kwargs)``, or a subclass's ``run()``.

    It starts with procpool's current start method (see ``procpool.set_start_method``); the
    ``ForkProcess``, ``SpawnProcess`` and ``ForkServerProcess`` subclasses fix one.
    """

    _start_method: str | None = None
    # False for processes whose result nobody asks for (a pool's workers, say): no pipe.
    _sends_result = True

    @staticmethod
    def _Popen(process_obj: BaseProcess) -> Any:
        method = process_obj._start_method or default_method()  # type: ignore[attr-defined]
        if method == "forkserver":
            # procpool's own fork server: a fork of this program where safe (see _zygote).
            return new_popen(process_obj)
        return multiprocessing.get_context(method).Process._Popen(process_obj)  # type: ignore[attr-defined]

    def run(self) -> Any:
        """Call the target and return what it returns (the standard library drops it)."""
        if self._target:  # type: ignore[attr-defined]
            return self._target(*self._args, **self._kwargs)  # type: ignore[attr-defined]
        return None

    def start(self) -> None:
        """Start the child, with the pipe that will bring its result back."""
        if not self._sends_result:
            return super().start()
        reader, writer = multiprocessing.Pipe(duplex=False)
        self._procpool_writer = writer
        try:
            super().start()
        except BaseException:
            reader.close()
            raise
        finally:
            del self._procpool_writer
            writer.close()  # the child's copy is the only writer now: its exit means EOF
        self._procpool_reader: Connection | None = reader
        self._procpool_outcome: bytes | None = None
        self._procpool_lock = threading.Lock()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the child to end, reading its result if it sends one meanwhile."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.__dict__.get("_procpool_reader") is not None and self._popen is not None:  # type: ignore[attr-defined]
            self._receive(timeout)
            if deadline is not None:
                timeout = max(0.0, deadline - time.monotonic())
        super().join(timeout)

    def result(self, timeout: float | None = None) -> Any:
        """What the target (or ``run()``) returned, once the process has ended.

        Waits for it to end (at most ``timeout`` seconds, then ``multiprocessing.TimeoutError``).
        Re-raises the exception it raised, its traceback in the child as ``__cause__``. A child
        that ended without returning (killed by a signal, ``os._exit``, ``sys.exit``) raises
        :class:`procpool.WorkerLostError` saying how it ended. ``ValueError`` if the process
        was never started, or is not this process's child.
        """
        if self._popen is None:  # type: ignore[attr-defined]
            raise ValueError(f"result() of {self!r}, which was never started")
        if not self._sends_result:
            raise ValueError(f"result() of {self!r}, whose class sends no result")
        if "_procpool_lock" not in self.__dict__:
            raise ValueError(f"result() of {self!r}: only the process that started it has it")
        self.join(timeout)
        if self.exitcode is None:
            raise multiprocessing.TimeoutError(f"{self!r} still runs after {timeout} seconds")
        # Imported here, where the parent needs them, not by every child that unpickles this.
        from ._errors import WorkerLostError, describe_exit
        from ._serialize import decode_exception

        outcome = self._procpool_outcome
        if outcome is None:
            raise WorkerLostError(
                f"process {self.pid} {describe_exit(self.exitcode)} before returning a result",
                self.pid,
                self.exitcode,
            )
        if outcome[:1] == _RAISED:
            raise decode_exception(outcome[1:])
        return pickle.loads(outcome[1:])

    def close(self) -> None:
        super().close()
        reader = self.__dict__.get("_procpool_reader")
        if reader is not None:
            self._procpool_reader = None
            reader.close()

    def _receive(self, timeout: float | None) -> None:
        """Read the child's outcome if it comes within ``timeout``.

        Once the child has ended, nothing to read means it sent nothing (its own children may
        still hold the pipe open, so the end of the pipe is not awaited)."""
        with self._procpool_lock:
            reader = self._procpool_reader
            if reader is None or not wait([reader, self.sentinel], timeout):
                return
            if reader.poll(0):
                try:
                    self._procpool_outcome = reader.recv_bytes()
                except (EOFError, OSError):
                    pass  # the pipe closed without an outcome
            self._procpool_reader = None
            reader.close()

    def _bootstrap(self, parent_sentinel: Any = None) -> int:
        """In the child: run, then send the outcome back on the result pipe."""
        writer = self.__dict__.pop("_procpool_writer", None)
        if writer is not None:
            run = self.run
            self.run = lambda: _send_outcome(writer, run)  # type: ignore[method-assign]
        return super()._bootstrap(parent_sentinel)  # type: ignore[misc, no-any-return]

    def __getstate__(self) -> dict[str, Any]:
        # Imported here: only the parent pickles a process, and a worker process, which
        # unpickles one, must not import the serialisation (and error) machinery for it.
        from ._serialize import dumps_for_child, importable_in_worker

        state = {k: v for k, v in self.__dict__.items() if k not in _PARENT_ONLY}
        target = state.get("_target")
        # A plain function the child can import goes by reference (a pool's worker loop, say):
        # cloudpickle is for lambdas, closures and functions of a REPL.
        by_name = (
            isinstance(target, FunctionType)
            and "<" not in target.__qualname__
            and importable_in_worker(target)
        )
        if target is not None and not by_name:
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


def _send_outcome(writer: Connection, run: Any) -> None:
    """Run ``run()`` and write its outcome to ``writer``: the value, or what it raised.

    ``SystemExit`` and ``KeyboardInterrupt`` go on unreported (the process ends without a
    result, and its exit code says how)."""
    try:
        try:
            value = run()
        except Exception as exc:
            writer.send_bytes(_RAISED + encode_exception(exc))
            raise
        try:
            payload = _RETURNED + pickle.dumps(value, protocol=PROTOCOL)
        except Exception as exc:
            payload = _RAISED + encode_exception(encoding_error(exc, value))
        writer.send_bytes(payload)
    finally:
        writer.close()


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
