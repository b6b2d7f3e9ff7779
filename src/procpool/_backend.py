"""The small interface between the Pool facade and whatever runs its tasks.

The facade turns calls into :class:`PreparedTask` objects (function and arguments already
pickled, in the caller's thread) and hands them to a :class:`Backend`; the backend reports each
task's outcome to the task's :class:`ResultSink`. The local process backend
(``_scheduler.ProcessBackend``) and the Dask backend (``_dask.DaskBackend``) implement the same
few methods, and the facade never knows which it talks to. What only a backend of local worker
processes can do (list them, start missing ones now) is the separate :class:`LocalWorkers`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import NamedTuple, Protocol, runtime_checkable

from ._protocol import Mode, Status
from ._shm import Lent, Segment

__all__ = [
    "Backend",
    "HeldWakes",
    "LocalWorkers",
    "Measured",
    "PreparedTask",
    "ResultSink",
    "wakes",
]


class HeldWakes(threading.local):
    """The wake-ups of waiting consumers that a backend's thread holds back while it delivers a
    batch of outcomes (the results of one read from a worker, say).

    A consumer woken at every delivery takes the interpreter's lock from the delivering thread
    once per result, and both slow down; woken once per batch, it finds several results at
    once. A backend thread brackets a batch with :meth:`hold` and :meth:`release`; a sink that
    delivers while wake-ups are held calls :meth:`defer` with its wake-up instead of waking
    its consumer. Per thread: a sink called from another thread wakes its consumer at once.
    """

    held: list[Callable[[], None]] | None = None

    def hold(self) -> None:
        self.held = []

    def defer(self, wake: Callable[[], None]) -> bool:
        """Keep ``wake`` for the end of the batch; False (call it now) if none is held."""
        held = self.held
        if held is None:
            return False
        held.append(wake)
        return True

    def release(self) -> None:
        """Wake every consumer that a delivery of the batch has something for (once each)."""
        held, self.held = self.held, None
        if held:
            for wake in dict.fromkeys(held):
                wake()


wakes = HeldWakes()


class ResultSink(Protocol):
    """Where a task's outcome goes: one of the result objects the caller holds.

    ``index`` says which part of the sink's job the task is (the chunk number of a map).
    Both methods may be called from the backend's thread and must return quickly. A sink must
    be weakly referable (the task core remembers cancelled ones without keeping them alive).
    """

    def _deliver(
        self,
        index: int,
        status: Status,
        payload: memoryview,
        attempts: Sequence[str] = (),
        lent: Lent | None = None,
    ) -> None:
        """The task ran; ``payload`` is the still-pickled result or exception.

        ``attempts`` says how earlier attempts at it failed, when it was retried. ``lent``: the
        shared-memory views of the result's large buffers (decode with ``_shm.loads``)."""

    def _fail(self, index: int, exc: BaseException) -> None:
        """The task could not run or could not finish (its worker died, say)."""


class Measured(NamedTuple):
    """How long one call of a function took lately, and from how many measurements."""

    seconds: float | None  # None: never measured
    samples: int  # measurements so far (tasks of the function that reported a duration)


@dataclass(slots=True)
class PreparedTask:
    """One unit of work, pickled and ready to travel."""

    mode: Mode
    function: bytes
    arguments: bytes
    sink: ResultSink
    index: int
    label: str  # names the function in error messages
    timeout: float | None = None  # seconds it may run once started
    retries: int = 0  # runs it may have again after a failed attempt
    retry_on: bytes = b""  # pickled tuple of the exception types worth a retry
    # The chunk's items fail alone: an item that raises yields its exception in place (the
    # sink returns it or raises it at its turn), and so does one that killed its worker.
    return_exceptions: bool = False
    segments: list[Segment] = field(default_factory=list)  # the arguments' large buffers
    items: int = 1  # calls the task makes (a map chunk's length)
    # Items that killed a worker (return_exceptions): not called again, each failing with its
    # encoded exception (see TaskCore.item_lost).
    fallen: dict[int, bytes] = field(default_factory=dict)


class Backend(Protocol):
    """What the Pool facade needs from the thing that runs tasks. Every method is thread-safe."""

    def submit(self, tasks: list[PreparedTask]) -> None:
        """Queue tasks; each one's outcome reaches its sink, whatever happens to the pool."""

    def cancel(self, sink: ResultSink) -> bool:
        """Cancel the sink's unfinished tasks (stopping them if they run); False if none was."""

    def close(self) -> None:
        """No more tasks will come; finish what was submitted, then release the workers.
        (The facade calls it once every lazy producer, an imap's feeder, has ended.)"""

    def terminate(self) -> None:
        """Stop at once: fail every unfinished task, end every worker; returns when done."""

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the backend has finished after close or terminate; True if it has."""

    def item_seconds(self, function: bytes, wait: float = 0.0, until: int = 0) -> Measured:
        """How long one call of the pickled ``function`` took lately, first waiting up to
        ``wait`` seconds until it has ``until`` measurements in all: sizes its maps' chunks."""


@runtime_checkable
class LocalWorkers(Protocol):
    """A backend whose workers are this machine's processes (the standard library's
    ``Pool._pool`` and ``_repopulate_pool`` look at them)."""

    def repopulate(self) -> None:
        """Bring the workers back to full strength now."""

    def processes(self) -> list[BaseProcess]:
        """The worker processes alive at this moment."""
