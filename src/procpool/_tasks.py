"""The task core: what a task is and what happens to it, whatever runs it.

Every backend keeps its tasks in a :class:`TaskCore`. The core gives each task its id, keeps the
record of its attempts, decides whether a failed attempt is run again (``retries`` and
``retry_on``), keeps the deadline of each timed attempt, and sends every outcome where it goes
(the task's result sink), exactly once: a result, an exception, a lost worker, a timeout, a
cancellation, the pool's end. A backend only runs attempts and reports how each ended:

    backend                                   TaskCore
    ───────                                   ────────
    submit(tasks)                  ──add──▶   ids (None: refused once terminated or broken,
                                                 or the result was cancelled)
    an attempt starts              ──started─▶ its deadline, if the task has a timeout
    it returned or raised          ──completed─▶ delivered, or True: run it again; its
                                                 time per call measured for its function
    its worker was lost, it timed  ──ended──▶ failed with the backend's error, or True:
      out, Dask dropped it                      run it again (the attempt is recorded)
    ... while calling item k of a  ──item_lost─▶ True: run it again, without item k, which
      task whose items fail alone               fails alone (or the whole task, if it may retry)
    cancel(sink)                   ──cancel─▶ failed TaskCancelledError; the ids to stop
    terminate / the pool broke     ──fail / terminate / break_pool─▶ failed for good

Where and when attempts run (worker slots, flow control, recalls, killing a worker whose task
timed out) stays in the backend: ``_policy`` for local processes, ``_dask`` for a cluster.

The core is thread-safe (the Dask backend reports from several threads); result sinks are
called outside its lock, so a sink may call back into the backend.
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ._backend import Measured, PreparedTask, ResultSink
from ._errors import PoolTerminatedError, TaskCancelledError, attempts_note
from ._protocol import Status, decode_exception_parts, encode_exception
from ._shm import Lent

__all__ = ["ErrorFactory", "TaskCore", "moving_average"]

# Builds the error that ends a task, from the sentence that says what happened to it.
ErrorFactory = Callable[[str], BaseException]

# Weight of the newest sample in a moving average of measured durations; what is left of the
# older samples' weight after each new one.
_EMA_WEIGHT = 0.2
_DECAY = 1 - _EMA_WEIGHT
# Functions whose time per call is remembered (the oldest measured is forgotten first).
_MEASURED_FUNCTIONS = 256


def moving_average(average: float | None, sample: float) -> float:
    """The measured durations' moving average after one more sample (None: no sample yet)."""
    return sample if average is None else average + _EMA_WEIGHT * (sample - average)


@dataclass(slots=True, eq=False)
class _Record:
    task: PreparedTask
    earlier: list[str] = field(default_factory=list)  # how earlier attempts ended, in words


class TaskCore:
    """The unfinished tasks of one pool, their attempts and their deadlines."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[int, _Record] = {}
        self._deadlines: dict[int, float] = {}  # task id -> when its running attempt times out
        self._ids = itertools.count()
        self._running = True  # False once terminated or broken: no retry, no new task
        # Results the caller cancelled: a task of theirs that comes later is refused.
        self._cancelled_sinks: weakref.WeakSet[ResultSink] = weakref.WeakSet()
        self._broken: BaseException | None = None
        # Seconds one call of each function takes: pickled function -> (seconds, calls, samples),
        # the sums decaying by _DECAY at each new sample, so that a chunk counts as many calls
        # as it made (a one-item chunk, mostly fixed costs, weighs little against a chunk of a
        # thousand). Sizes the automatic chunks of the function's maps; read by other threads.
        self._per_call: dict[bytes, tuple[float, float, int]] = {}
        self._measured_more = threading.Condition(self._lock)  # a function has a new sample

    # -- queries ------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Tasks not yet ended."""
        return len(self._records)

    def task(self, task_id: int) -> PreparedTask | None:
        """The task, or None once it has ended (delivered, failed or cancelled)."""
        record = self._records.get(task_id)
        return None if record is None else record.task

    def ids_of(self, sink: ResultSink) -> list[int]:
        """The unfinished tasks whose outcome goes to ``sink``."""
        with self._lock:
            return [i for i, r in self._records.items() if r.task.sink is sink]

    def unfinished(self) -> list[int]:
        with self._lock:
            return list(self._records)

    def item_seconds(self, function: bytes, wait: float = 0.0, until: int = 0) -> Measured:
        """How long one call of the (pickled) function took lately, and from how many
        measurements. ``wait``: first wait up to this many seconds until it has ``until``
        measurements in all (counted from those it had when its caller submitted the tasks
        it waits for: they may report before the wait begins)."""
        if wait > 0:
            with self._measured_more:
                self._measured_more.wait_for(lambda: self._samples(function) >= until, wait)
        sums = self._per_call.get(function)
        return Measured(None, 0) if sums is None else Measured(sums[0] / sums[1], sums[2])

    def _samples(self, function: bytes) -> int:
        sums = self._per_call.get(function)
        return 0 if sums is None else sums[2]

    @property
    def broken(self) -> BaseException | None:
        """Why the pool broke, or None."""
        return self._broken

    # -- tasks come and attempts start ----------------------------------------------------------

    def add(self, tasks: Sequence[PreparedTask]) -> list[int | None]:
        """Give the tasks their ids and keep them until they end: an id for each task, or None
        for one refused and failed at once (the pool is terminated or broken; its result was
        cancelled, and a feeder still reading its input submitted it meanwhile)."""
        refused: list[tuple[PreparedTask, BaseException]] = []
        ids: list[int | None] = []
        with self._lock:
            cancelled = self._cancelled_sinks if len(self._cancelled_sinks) else ()
            for task in tasks:
                if not self._running:
                    refused.append((task, self.final_error(task)))
                elif task.sink in cancelled:
                    refused.append((task, TaskCancelledError(f"task {task.label} was cancelled")))
                else:
                    task_id = next(self._ids)
                    self._records[task_id] = _Record(task)
                    ids.append(task_id)
                    continue
                ids.append(None)
        for task, error in refused:
            task.sink._fail(task.index, error)
        return ids

    def started(self, task_id: int) -> None:
        """An attempt at the task has started: its deadline runs from now, if it has one."""
        with self._lock:
            record = self._records.get(task_id)
            if record is not None and record.task.timeout is not None:
                self._deadlines[task_id] = self._clock() + record.task.timeout

    def next_deadline(self) -> float | None:
        """The earliest moment a running attempt times out, or None."""
        with self._lock:
            return min(self._deadlines.values(), default=None)

    def expired(self) -> list[int]:
        """The tasks whose running attempt is past its deadline (each reported once: the
        backend stops the attempt and reports how it ended with :meth:`ended`)."""
        if not self._deadlines:
            return []
        now = self._clock()
        with self._lock:
            late = [i for i, when in self._deadlines.items() if when <= now]
            for task_id in late:
                del self._deadlines[task_id]
        return late

    # -- attempts end ---------------------------------------------------------------------------

    def completed(
        self,
        task_id: int,
        status: Status,
        payload: memoryview,
        lent: Lent | None = None,
        where: str = "",
        elapsed: float | None = None,
    ) -> bool:
        """An attempt returned or raised (``payload``: the pickled result or exception).

        Status RETRY means it raised one of the task's ``retry_on`` exceptions: if the task may
        run again, the attempt is recorded and True returned (the backend runs it again);
        otherwise what it produced is delivered. ``where`` names where it ran, for the record;
        ``elapsed``: the seconds it ran, if measured.
        """
        with self._lock:
            record = self._records.get(task_id)
            if record is None:
                return False  # ended already (cancelled, say): this report is not wanted
            self._deadlines.pop(task_id, None)
            task = record.task
            if elapsed is not None:
                self._measured(task, elapsed)
            if status is Status.RETRY:
                if self._may_retry(record):
                    record.earlier.append(f"raised {_raised(task, payload)} {where}".rstrip())
                    return True
                # No retry left: deliver what the task produced.
                status = Status.OK if task.return_exceptions else Status.ERROR
            del self._records[task_id]
        task.sink._deliver(task.index, status, payload, record.earlier, lent)
        return False

    def ended(self, task_id: int, what: str, error: ErrorFactory) -> bool:
        """An attempt ended without an outcome: ``what`` happened to it (its worker was lost,
        it timed out), in words that follow "task <label>". If the task may run again, the
        attempt is recorded and True returned; otherwise the task fails with
        ``error("task <label> <what>")``, earlier attempts noted on it."""
        with self._lock:
            record = self._records.get(task_id)
            if record is None:
                return False
            self._deadlines.pop(task_id, None)
            if self._may_retry(record):
                record.earlier.append(what)
                return True
            del self._records[task_id]
        self._fail_record(record, error(f"task {record.task.label} {what}"))
        return False

    def item_lost(self, task_id: int, item: int, what: str, error: ErrorFactory) -> bool:
        """Like :meth:`ended`, for an attempt that was calling item ``item`` of a task whose
        items fail alone (``return_exceptions``). The other items' results were lost with it.
        If the task may run again (retries), the whole attempt is recorded as for
        :meth:`ended`; otherwise that item alone fails, with ``error``, and the task runs again
        for the others (True), without calling it. Each loss fails one more item, so a task of
        n items runs at most n + 1 times."""
        with self._lock:
            record = self._records.get(task_id)
            if record is None:
                return False
            if self._running and not self._may_retry(record):
                self._deadlines.pop(task_id, None)
                task = record.task
                failure = error(
                    f"task {task.label} (item {item} of a chunk of {task.items}) {what}"
                )
                if record.earlier:
                    failure.add_note(attempts_note(record.earlier))
                task.fallen[item] = encode_exception(failure, with_traceback=False)
                return True
        return self.ended(task_id, what, error)

    def fail(
        self, task_ids: Iterable[int], error: Callable[[PreparedTask], BaseException]
    ) -> dict[int, PreparedTask]:
        """End these tasks with ``error(task)`` (ids already ended are skipped); the tasks
        ended, by id."""
        with self._lock:
            records = {i: r for i in task_ids if (r := self._pop(i)) is not None}
        for record in records.values():
            self._fail_record(record, error(record.task))
        return {i: r.task for i, r in records.items()}

    def cancel(self, sink: ResultSink) -> dict[int, PreparedTask]:
        """The caller cancelled the sink's unfinished tasks: they fail with
        :class:`TaskCancelledError` now; those returned, by id, are the attempts to stop."""
        with self._lock:
            self._cancelled_sinks.add(sink)
        return self.fail(
            self.ids_of(sink), lambda task: TaskCancelledError(f"task {task.label} was cancelled")
        )

    def terminate(self) -> None:
        """The pool was terminated: every unfinished task fails, and no task is accepted."""
        with self._lock:
            self._running = False
        self.fail(self.unfinished(), self.final_error)

    def break_pool(self, error: BaseException) -> None:
        """The pool cannot run tasks any more (its initializer raised, no worker can start):
        ``error`` is what every task failed from now on raises (a copy each). Tasks already
        accepted end as the backend reports them (those no worker will run: :meth:`fail`)."""
        with self._lock:
            self._running = False
            if self._broken is None:
                self._broken = error

    def final_error(self, task: PreparedTask) -> BaseException:
        """Why the task cannot run any more: the pool broke, or was terminated."""
        broken = self._broken
        if broken is None:
            return PoolTerminatedError(f"the pool was terminated before task {task.label} finished")
        # Each failed task gets an exception object of its own: raising one object in several
        # places would tangle their tracebacks.
        error = type(broken)(*broken.args)
        error.__cause__ = broken.__cause__
        return error

    # -- inside ---------------------------------------------------------------------------------

    def _measured(self, task: PreparedTask, elapsed: float) -> None:
        per_call = self._per_call
        calls = max(1, task.items)
        sums = per_call.get(task.function)
        if sums is None:
            per_call[task.function] = (elapsed, calls, 1)
            if len(per_call) > _MEASURED_FUNCTIONS:
                del per_call[next(iter(per_call))]  # the function measured first
        else:
            seconds, before, samples = sums
            per_call[task.function] = (
                seconds * _DECAY + elapsed,
                before * _DECAY + calls,
                samples + 1,
            )
        self._measured_more.notify_all()

    def _may_retry(self, record: _Record) -> bool:
        return self._running and len(record.earlier) < record.task.retries

    def _pop(self, task_id: int) -> _Record | None:
        self._deadlines.pop(task_id, None)
        return self._records.pop(task_id, None)

    @staticmethod
    def _fail_record(record: _Record, error: BaseException) -> None:
        if record.earlier:
            error.add_note(attempts_note(record.earlier))
        record.task.sink._fail(record.task.index, error)


def _raised(task: PreparedTask, payload: memoryview) -> str:
    """What a task raised, in a few words, for the record of its attempts."""
    if task.return_exceptions:
        return "an exception worth a retry for one of its items"
    return decode_exception_parts(payload)[2]
