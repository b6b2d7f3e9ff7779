"""The scheduling policy: every dispatch, respawn, retirement, deadline, retry and cancellation
decision, without I/O.

The scheduler thread feeds a :class:`Policy` events (a task was submitted, a worker became ready,
a task finished, a worker exited, time passed, a task was cancelled) and carries out the actions
it returns (spawn a worker, send it tasks, stop or kill it, fail a task or queue it again).
Nothing here touches a process, a pipe or the real clock, so the policy is tested with plain
method calls and an injected clock.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "Action",
    "Fail",
    "FailReason",
    "Kill",
    "Lifecycle",
    "Policy",
    "Retry",
    "Send",
    "Spawn",
    "Stop",
    "TaskInfo",
]

# Workers that die before they ever report ready, this many times in a row, break the pool:
# something in start-up (an import, the initializer) kills every worker, and respawning forever
# would leave the caller waiting forever.
MAX_STARTUP_FAILURES = 3

# Largest batch of independent tasks sent to one worker in one message. Batching amortises the
# round trip on queues of tiny tasks; the cap bounds how much work one slow task can hold back.
MAX_BATCH = 64


class Lifecycle(enum.StrEnum):
    """The pool's lifecycle; the values are the standard library's state names."""

    INIT = "INIT"  # the facade's state while the pool is being built
    RUN = "RUN"
    CLOSE = "CLOSE"
    TERMINATE = "TERMINATE"
    BROKEN = "BROKEN"


class _Phase(enum.Enum):
    STARTING = enum.auto()  # spawned, initializer not yet reported done
    IDLE = enum.auto()
    BUSY = enum.auto()
    LEAVING = enum.auto()  # told to stop or killed; waiting for it to exit


class FailReason(enum.Enum):
    """Why the policy failed tasks; the scheduler turns each into an exception."""

    WORKER_LOST = enum.auto()  # the worker holding them died
    TIMED_OUT = enum.auto()  # the task ran past its deadline; its worker was killed
    TERMINATED = enum.auto()  # terminate() was called
    BROKEN = enum.auto()  # the pool broke (initializer failed, no worker can start)
    CANCELLED = enum.auto()  # the caller cancelled it
    RAISED = enum.auto()  # (retries only) it raised one of the exceptions worth a retry


@dataclass(frozen=True)
class TaskInfo:
    """What the policy knows of a task: its id, how long it may run once started, its size."""

    task_id: int
    timeout: float | None = None
    size: int = 0  # bytes it takes on the wire
    # May wait in a busy worker's channel behind the task it runs. Never for apply_async tasks:
    # a task bound to a busy worker cannot move to one that becomes idle, and tasks that wait
    # for each other would deadlock (the standard library's pool never binds a task early).
    prefetch: bool = True
    retries: int = 0  # how many times it may be run again after a failed attempt


@dataclass(frozen=True)
class Spawn:
    wid: int


@dataclass(frozen=True)
class Send:
    wid: int
    task_ids: tuple[int, ...]


@dataclass(frozen=True)
class Stop:
    """Ask the worker to exit once it is idle (it is idle when this is sent)."""

    wid: int


@dataclass(frozen=True)
class Kill:
    wid: int


@dataclass(frozen=True)
class Fail:
    task_ids: tuple[int, ...]
    reason: FailReason
    wid: int | None = None  # the worker involved, for WORKER_LOST and TIMED_OUT


@dataclass(frozen=True)
class Retry:
    """The attempt failed (``reason``, on worker ``wid``); the task is queued to run again."""

    task_id: int
    reason: FailReason
    wid: int


Action = Spawn | Send | Stop | Kill | Fail | Retry


@dataclass
class _Worker:
    wid: int
    phase: _Phase = _Phase.STARTING
    completed: int = 0  # tasks finished, for maxtasksperchild
    # Batches sent and not yet finished, in the order the worker runs them: the one running,
    # and at most one prefetched behind it.
    batches: deque[list[TaskInfo]] = field(default_factory=deque)
    deadline: float | None = None
    retiring: bool = False  # replace it once it is idle (it outgrew the memory cap)

    def held(self) -> tuple[int, ...]:
        return tuple(t.task_id for batch in self.batches for t in batch)

    def release(self) -> list[TaskInfo]:
        """Forget every task the worker holds (it died, or is being killed), in running order."""
        held = [t for batch in self.batches for t in batch]
        self.batches.clear()
        self.deadline = None
        return held


class Policy:
    """Decides what the pool does next; owned and driven by the scheduler thread alone."""

    def __init__(
        self,
        processes: int,
        maxtasksperchild: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        prefetch_bytes: int = 0,
        max_memory: int | None = None,
    ) -> None:
        """``prefetch_bytes``: a busy worker may be sent one more batch of at most this many
        bytes, so that it never waits for a round trip between batches (0: never). Small is
        the point: a frame that fits the channel's buffer cannot block the scheduler.
        ``max_memory``: a worker that reports more resident bytes is replaced once idle."""
        self.size = processes
        self.maxtasks = maxtasksperchild
        self.prefetch_bytes = prefetch_bytes
        self.max_memory = max_memory
        self.state = Lifecycle.RUN
        self._clock = clock
        self._pending: deque[TaskInfo] = deque()
        self._workers: dict[int, _Worker] = {}
        self._next_wid = 0
        self._startup_failures = 0
        self._open_sources = 0
        self._failed_attempts: dict[int, int] = {}  # task id -> attempts that failed so far
        # Cancelled tasks a worker still holds (it may run them); their reports are ignored.
        self._cancelled: set[int] = set()

    # -- queries ------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once the pool has no work left and no worker: the scheduler may exit."""
        if self._workers:
            return False
        if self.state in (Lifecycle.TERMINATE, Lifecycle.BROKEN):
            return True
        return self.state is Lifecycle.CLOSE and not self._pending and not self._open_sources

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def worker_ids(self) -> list[int]:
        return list(self._workers)

    def in_flight(self, wid: int) -> tuple[int, ...]:
        """Ids of the tasks the worker holds."""
        return self._workers[wid].held()

    def expects_report(self, wid: int, task_id: int) -> bool:
        """Whether the worker's report on this task is the one due next.

        A worker runs and reports its tasks in the order it was sent them, so any other report
        is a late one for a task already failed (it timed out, and may be running again).
        """
        batches = self._workers[wid].batches
        return bool(batches) and batches[0][0].task_id == task_id

    def next_deadline(self) -> float | None:
        """The earliest moment a running task times out, or None: the scheduler's wait timeout."""
        deadlines = [w.deadline for w in self._workers.values() if w.deadline is not None]
        return min(deadlines, default=None)

    # -- events -------------------------------------------------------------------------------

    def start(self) -> list[Action]:
        """The pool starts: spawn the full complement of workers."""
        return self._replenish()

    def repopulate(self) -> list[Action]:
        """Bring the pool back to full size (the standard library's ``_repopulate_pool``)."""
        return self._replenish() + self._dispatch()

    def submit(self, tasks: Iterable[TaskInfo]) -> list[Action]:
        tasks = list(tasks)
        if self.state in (Lifecycle.TERMINATE, Lifecycle.BROKEN):
            reason = (
                FailReason.TERMINATED if self.state is Lifecycle.TERMINATE else FailReason.BROKEN
            )
            return [Fail(tuple(t.task_id for t in tasks), reason)]
        self._pending.extend(tasks)
        return self._dispatch()

    def source_opened(self) -> None:
        """A lazy task source (an imap) may still submit tasks: do not wind down before it ends."""
        self._open_sources += 1

    def source_closed(self) -> list[Action]:
        self._open_sources -= 1
        return self._dispatch()

    def worker_ready(self, wid: int) -> list[Action]:
        worker = self._workers[wid]
        self._startup_failures = 0
        if worker.phase is _Phase.STARTING:
            worker.phase = _Phase.IDLE
        return self._dispatch()

    def task_done(
        self, wid: int, task_id: int, retryable: bool = False, resident: int = 0
    ) -> list[Action]:
        """The worker reported the task's outcome (a result or the task's own exception).

        ``retryable``: the task raised one of its ``retry_on`` exceptions; a Retry action says
        the task runs again (its outcome is then not delivered). ``resident``: the worker's
        memory as it reported it (0: not measured).
        """
        worker = self._workers[wid]
        if not self.expects_report(wid, task_id):
            return []
        running = worker.batches[0]
        task = running.pop(0)
        worker.completed += 1
        if self.max_memory is not None and resident > self.max_memory:
            worker.retiring = True
        actions: list[Action] = []
        if self._forget_cancelled(task):
            pass
        elif retryable and self._may_retry(task):
            actions.append(self._retry_or_fail(task, FailReason.RAISED, wid))
        else:
            self._failed_attempts.pop(task_id, None)
        if not running:
            worker.batches.popleft()
            worker.deadline = None
        if worker.batches:
            return actions + self._dispatch()  # on to its prefetched batch: maybe prefetch more
        if worker.phase is not _Phase.BUSY:
            return actions
        worker.phase = _Phase.IDLE
        if worker.retiring or (self.maxtasks is not None and worker.completed >= self.maxtasks):
            worker.phase = _Phase.LEAVING
            actions.append(Stop(wid))
            actions += self._replenish()
        return actions + self._dispatch()

    def worker_exited(self, wid: int) -> list[Action]:
        """The worker's process ended, expectedly or not: fail the task it was running, queue
        again the ones it held but had not started, and replace it."""
        worker = self._workers.pop(wid)
        actions: list[Action] = []
        held = worker.release()
        if held:
            # A worker runs its tasks in order and reports each: only the first unreported one
            # was running. The rest never started, so they go back to the head of the queue.
            running, unstarted = held[0], [t for t in held[1:] if not self._forget_cancelled(t)]
            self._pending.extendleft(reversed(unstarted))
            if not self._forget_cancelled(running):
                actions.append(self._retry_or_fail(running, FailReason.WORKER_LOST, wid))
            if self.state is Lifecycle.BROKEN:
                actions += self._fail_pending(FailReason.BROKEN)
        if worker.phase is _Phase.STARTING:
            self._startup_failures += 1
            if self._startup_failures >= MAX_STARTUP_FAILURES:
                return actions + self.break_pool()
        return actions + self._replenish() + self._dispatch()

    def send_failed(self, wid: int, task_ids: tuple[int, ...]) -> list[Action]:
        """A batch could not be sent (the worker's channel is closed): the worker never had it.
        Queue it again at the head; send that worker nothing more (its exit is on its way)."""
        worker = self._workers[wid]
        ids = set(task_ids)
        unsent = [
            t
            for batch in worker.batches
            for t in batch
            if t.task_id in ids and not self._forget_cancelled(t)
        ]
        worker.batches = deque(
            kept for batch in worker.batches if (kept := [t for t in batch if t.task_id not in ids])
        )
        if not worker.batches:
            worker.deadline = None
        worker.phase = _Phase.LEAVING
        self._pending.extendleft(reversed(unsent))
        if self.state is Lifecycle.BROKEN:
            return self._fail_pending(FailReason.BROKEN)
        return self._replenish() + self._dispatch()

    def spawn_failed(self, wid: int) -> list[Action]:
        """Starting a worker raised; go on with the others, or break if there are none."""
        del self._workers[wid]
        if not self._workers:
            return self.break_pool()
        return self._dispatch()

    def break_pool(self) -> list[Action]:
        """The pool cannot go on (its initializer raised): fail what waits, stop every worker."""
        if self.state in (Lifecycle.TERMINATE, Lifecycle.BROKEN):
            return []
        self.state = Lifecycle.BROKEN
        return self._fail_pending(FailReason.BROKEN) + self._wind_down()

    def expire(self) -> list[Action]:
        """Kill the workers whose task ran past its deadline; fail those tasks."""
        now = self._clock()
        actions: list[Action] = []
        for worker in self._workers.values():
            if worker.deadline is not None and worker.deadline <= now:
                actions.append(Kill(worker.wid))
                worker.phase = _Phase.LEAVING
                for task in worker.release():  # a task with a deadline travels alone
                    if not self._forget_cancelled(task):
                        actions.append(self._retry_or_fail(task, FailReason.TIMED_OUT, worker.wid))
        if actions:
            actions += self._replenish() + self._dispatch()
        return actions

    def cancel(self, task_ids: Iterable[int]) -> list[Action]:
        """The caller cancelled these tasks: fail them CANCELLED, wherever they are.

        A queued task is dropped; a running one is stopped by killing its worker (which is
        replaced, and whose other tasks go back to the queue); one waiting behind another in a
        worker's channel cannot be taken back, so the worker runs it and its report is ignored.
        """
        ids = set(task_ids) - self._cancelled
        found = [t.task_id for t in self._pending if t.task_id in ids]
        if found:
            self._pending = deque(t for t in self._pending if t.task_id not in ids)
        actions: list[Action] = []
        for worker in self._workers.values():
            held = worker.held()
            hit = [task_id for task_id in held if task_id in ids]
            found += hit
            if not hit:
                continue
            if held[0] in ids and worker.phase is not _Phase.LEAVING:
                unstarted = [
                    t
                    for t in worker.release()[1:]
                    if t.task_id not in ids and not self._forget_cancelled(t)
                ]
                self._pending.extendleft(reversed(unstarted))
                worker.phase = _Phase.LEAVING
                actions.append(Kill(worker.wid))
            else:
                self._cancelled.update(hit)
        if not found:
            return []
        for task_id in found:
            self._failed_attempts.pop(task_id, None)
        return [Fail(tuple(found), FailReason.CANCELLED), *actions] + (
            self._replenish() + self._dispatch()
        )

    def close(self) -> list[Action]:
        """No more tasks will come (but lazy sources already open may still add theirs)."""
        if self.state is Lifecycle.RUN:
            self.state = Lifecycle.CLOSE
        return self._dispatch()

    def terminate(self) -> list[Action]:
        """Stop now: fail every pending and running task, kill every worker."""
        if self.state is Lifecycle.TERMINATE:
            return []
        self.state = Lifecycle.TERMINATE
        actions = self._fail_pending(FailReason.TERMINATED)
        for worker in self._workers.values():
            held = tuple(t.task_id for t in worker.release() if not self._forget_cancelled(t))
            if held:
                actions.append(Fail(held, FailReason.TERMINATED))
            worker.phase = _Phase.LEAVING
            actions.append(Kill(worker.wid))
        return actions

    # -- decisions ----------------------------------------------------------------------------

    def _may_retry(self, task: TaskInfo) -> bool:
        running = self.state in (Lifecycle.RUN, Lifecycle.CLOSE)
        return running and self._failed_attempts.get(task.task_id, 0) < task.retries

    def _retry_or_fail(self, task: TaskInfo, reason: FailReason, wid: int) -> Action:
        """After a failed attempt: queue the task again first in line, or fail it for good."""
        if self._may_retry(task):
            self._failed_attempts[task.task_id] = self._failed_attempts.get(task.task_id, 0) + 1
            self._pending.appendleft(task)
            return Retry(task.task_id, reason, wid)
        self._failed_attempts.pop(task.task_id, None)
        return Fail((task.task_id,), reason, wid)

    def _forget_cancelled(self, task: TaskInfo) -> bool:
        """True (and forget it) if the task was cancelled while a worker held it."""
        if task.task_id in self._cancelled:
            self._cancelled.discard(task.task_id)
            return True
        return False

    def _wants_workers(self) -> bool:
        if self.state is Lifecycle.RUN:
            return True
        return self.state is Lifecycle.CLOSE and bool(self._pending or self._open_sources)

    def _replenish(self) -> list[Action]:
        if not self._wants_workers():
            return []
        active = sum(w.phase is not _Phase.LEAVING for w in self._workers.values())
        actions: list[Action] = []
        for _ in range(self.size - active):
            wid = self._next_wid
            self._next_wid += 1
            self._workers[wid] = _Worker(wid)
            actions.append(Spawn(wid))
        return actions

    def _dispatch(self) -> list[Action]:
        actions: list[Action] = []
        for worker in self._workers.values():
            if not self._pending:
                break
            if worker.phase is _Phase.IDLE:
                actions.append(self._send_batch(worker, self._batch_limit(worker), None))
        # Idle workers first; then busy ones may take a small batch to run next, unless a
        # worker is about to be free (idle or starting) to take it.
        free_soon = any(w.phase in (_Phase.IDLE, _Phase.STARTING) for w in self._workers.values())
        for worker in self._workers.values():
            if not self._pending or not self.prefetch_bytes or free_soon:
                break
            if not self._pending[0].prefetch:
                break
            if (
                worker.phase is _Phase.BUSY
                and not worker.retiring
                and len(worker.batches) == 1
                and worker.deadline is None
                and all(t.prefetch for t in worker.batches[0])  # never behind an apply task
            ):
                limit = self._batch_limit(worker)
                first = self._pending[0]
                if limit > 0 and first.timeout is None and first.size <= self.prefetch_bytes:
                    actions.append(self._send_batch(worker, limit, self.prefetch_bytes))
        if not self._pending and not self._wants_workers():
            actions += self._wind_down()
        return actions

    def _batch_limit(self, worker: _Worker) -> int:
        """How many tasks the worker's next batch may hold."""
        limit = max(1, min(MAX_BATCH, len(self._pending) // (4 * self.size)))
        if self.maxtasks is not None:
            assigned = sum(len(batch) for batch in worker.batches)
            limit = min(limit, self.maxtasks - worker.completed - assigned)
        return limit

    def _send_batch(self, worker: _Worker, limit: int, max_bytes: int | None) -> Send:
        """Send the worker its next pending tasks: the first, then more up to ``limit`` tasks
        and ``max_bytes`` bytes.

        A task with a deadline travels alone and only to an idle worker, so that its deadline
        starts when it starts.
        """
        batch = [self._pending.popleft()]
        size = batch[0].size
        if batch[0].timeout is None:
            while len(batch) < limit and self._pending and self._pending[0].timeout is None:
                size += self._pending[0].size
                if max_bytes is not None and size > max_bytes:
                    break
                batch.append(self._pending.popleft())
        worker.batches.append(batch)
        worker.phase = _Phase.BUSY
        if batch[0].timeout is not None:
            worker.deadline = self._clock() + batch[0].timeout
        return Send(worker.wid, tuple(t.task_id for t in batch))

    def _wind_down(self) -> list[Action]:
        """Stop the idle workers once nothing more will be asked of them."""
        actions: list[Action] = []
        for worker in self._workers.values():
            if worker.phase is _Phase.IDLE:
                worker.phase = _Phase.LEAVING
                actions.append(Stop(worker.wid))
            elif worker.phase is _Phase.STARTING and self.state is Lifecycle.BROKEN:
                worker.phase = _Phase.LEAVING
                actions.append(Kill(worker.wid))
        return actions

    def _fail_pending(self, reason: FailReason) -> list[Action]:
        if not self._pending:
            return []
        failed = tuple(t.task_id for t in self._pending)
        self._pending.clear()
        return [Fail(failed, reason)]
