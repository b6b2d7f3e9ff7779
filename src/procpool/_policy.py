"""The local backend's scheduling policy: every dispatch, respawn, retirement and
flow-control decision, and where a task stopped or cancelled is running, without I/O.

The scheduler thread feeds a :class:`Policy` events (a task was submitted, a worker became ready,
a task finished, a worker exited, a task must be stopped, a task was cancelled) and carries out
the actions it returns (spawn a worker, send it tasks, stop or kill it, report an attempt lost).
What happens to a task itself (its attempts, retries, deadline, outcome) is the task core's
(``_tasks``): the policy says where attempts run and when one was lost, and queues a task again
when the core says it runs again. Nothing here touches a process, a pipe or the clock, so the
policy is tested with plain method calls.

Flow control. Each worker holds a queue of tasks in flight: the one it runs and some queued
behind it, so that it never waits for a round trip to the scheduler between tiny tasks. How many
is sized from the measured task duration (``AHEAD_SECONDS`` of work queued behind the running
task, within ``MAX_IN_FLIGHT`` tasks and ``MAX_IN_FLIGHT_BYTES``), and pending work is shared
out evenly among the workers. Work sent ahead is never stranded: when a worker falls idle with
nothing pending, the tasks queued behind other workers' running tasks are recalled (the worker
gives back those it has not started) and handed to the idle one.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from ._tasks import moving_average

__all__ = [
    "Action",
    "Fail",
    "FailReason",
    "Kill",
    "Lifecycle",
    "Lost",
    "Policy",
    "Recall",
    "Send",
    "Spawn",
    "Stop",
    "TaskInfo",
]

# Workers that die before they ever report ready, this many times in a row, break the pool:
# something in start-up (an import, the initializer) kills every worker, and respawning forever
# would leave the caller waiting forever.
MAX_STARTUP_FAILURES = 3

# Work a busy worker holds queued behind its running task, in seconds of measured task time:
# enough to cover the scheduler's round trip many times over, little enough to share out.
AHEAD_SECONDS = 0.002
# Bounds on what one worker holds in flight, whatever the measured durations.
MAX_IN_FLIGHT = 512
MAX_IN_FLIGHT_BYTES = 8 << 20
# Recall queued tasks for an idle worker only when they stand for at least this much work: a few
# tiny tasks finish sooner than a recall's round trip.
RECALL_MIN_SECONDS = 0.001


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
    """Why an attempt at a task ended without an outcome."""

    WORKER_LOST = enum.auto()  # the worker running it died
    TIMED_OUT = enum.auto()  # it ran past its deadline; its worker was killed


class TaskInfo(NamedTuple):
    """What the policy knows of a task: its id, whether it has a deadline, its size.

    (A named tuple: the scheduler makes one per task, and a frozen dataclass costs several
    times as much to build.)"""

    task_id: int
    timeout: float | None = None  # travels alone, to an idle worker, so it starts when sent
    size: int = 0  # bytes it takes on the wire
    # May be queued in a busy worker behind the task it runs. Never for apply_async tasks, which
    # go to idle workers only, as in the standard library's pool: such tasks may wait for each
    # other, and one queued behind its own waiter would have to wait for a recall.
    prefetch: bool = True


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
    """No worker will run these tasks: the pool broke."""

    task_ids: tuple[int, ...]


@dataclass(frozen=True)
class Lost:
    """The attempt at ``task`` on worker ``wid`` ended without an outcome (``reason``). The
    task core decides whether it runs again (then :meth:`Policy.requeue`) or fails."""

    task: TaskInfo
    reason: FailReason
    wid: int


@dataclass(frozen=True)
class Recall:
    """Ask the worker to give back these tasks if it has not started them."""

    wid: int
    task_ids: tuple[int, ...]


Action = Spawn | Send | Stop | Kill | Fail | Lost | Recall


@dataclass
class _Worker:
    wid: int
    phase: _Phase = _Phase.STARTING
    completed: int = 0  # tasks finished, for maxtasksperchild
    # Tasks sent and not yet reported, in the order the worker runs them: the first is running
    # (or about to), the rest are queued behind it.
    tasks: deque[TaskInfo] = field(default_factory=deque)
    held_bytes: int = 0
    recalling: set[int] = field(default_factory=set)  # asked back, no answer yet
    retiring: bool = False  # replace it once it is idle (it outgrew the memory cap)

    def held(self) -> tuple[int, ...]:
        return tuple(t.task_id for t in self.tasks)

    def take(self, task: TaskInfo) -> None:
        self.tasks.append(task)
        self.held_bytes += task.size

    def drop(self, ids: set[int]) -> list[TaskInfo]:
        """Remove these tasks from the worker's queue; the removed ones, in running order."""
        removed = [t for t in self.tasks if t.task_id in ids]
        if removed:
            self.tasks = deque(t for t in self.tasks if t.task_id not in ids)
            self.held_bytes -= sum(t.size for t in removed)
        self.recalling -= ids
        return removed

    def release(self) -> list[TaskInfo]:
        """Forget every task the worker holds (it died, or is being killed), in running order."""
        held = list(self.tasks)
        self.tasks.clear()
        self.held_bytes = 0
        self.recalling.clear()
        return held


class Policy:
    """Decides what the pool does next; owned and driven by the scheduler thread alone."""

    def __init__(
        self,
        processes: int,
        maxtasksperchild: int | None = None,
        max_memory: int | None = None,
        ahead_seconds: float = AHEAD_SECONDS,
    ) -> None:
        """``max_memory``: a worker that reports more resident bytes is replaced once idle.
        ``ahead_seconds``: measured work a busy worker may hold queued behind its running task
        (0: none, each worker holds one task at a time)."""
        self.size = processes
        self.maxtasks = maxtasksperchild
        self.max_memory = max_memory
        self.ahead_seconds = ahead_seconds
        # Moving average of how long a task runs, as the workers measure it (None: no sample).
        self.task_seconds: float | None = None
        self.state = Lifecycle.RUN
        self._pending: deque[TaskInfo] = deque()
        self._workers: dict[int, _Worker] = {}
        self._next_wid = 0
        self._startup_failures = 0
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
        return self.state is Lifecycle.CLOSE and not self._pending

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
        tasks = self._workers[wid].tasks
        return bool(tasks) and tasks[0].task_id == task_id

    # -- events -------------------------------------------------------------------------------

    def start(self) -> list[Action]:
        """The pool starts: spawn the full complement of workers."""
        return self._replenish()

    def repopulate(self) -> list[Action]:
        """Bring the pool back to full size (the standard library's ``_repopulate_pool``)."""
        return self._replenish() + self._dispatch()

    def submit(self, tasks: Iterable[TaskInfo]) -> list[Action]:
        """New tasks (the task core refuses them once the pool is terminated or broken)."""
        self._pending.extend(tasks)
        return self._dispatch()

    def requeue(self, task: TaskInfo) -> list[Action]:
        """An attempt was lost or raised, and the task core runs the task again: first in line.
        (After close, the loss that preceded this may have left no worker to run it.)"""
        self._pending.appendleft(task)
        return self._replenish() + self._dispatch()

    def worker_ready(self, wid: int) -> list[Action]:
        worker = self._workers[wid]
        self._startup_failures = 0
        if worker.phase is _Phase.STARTING:
            worker.phase = _Phase.IDLE
        return self._dispatch()

    def task_done(
        self,
        wid: int,
        task_id: int,
        again: bool = False,
        resident: int = 0,
        elapsed: float | None = None,
    ) -> list[Action]:
        """The worker reported the task's outcome (a result or the task's own exception).

        ``again``: the task core runs the task again (it raised one of its ``retry_on``
        exceptions): it is queued first in line. ``resident``: the worker's memory as it
        reported it (0: not measured). ``elapsed``: seconds the task ran.
        """
        worker = self._workers[wid]
        if not self.expects_report(wid, task_id):
            return []
        task = worker.tasks.popleft()
        worker.held_bytes -= task.size
        worker.recalling.discard(task_id)
        worker.completed += 1
        if elapsed is not None:
            self.task_seconds = moving_average(self.task_seconds, elapsed)
        if self.max_memory is not None and resident > self.max_memory:
            worker.retiring = True
        if not self._forget_cancelled(task) and again:
            self._pending.appendleft(task)
        return self._after_work(worker)

    def tasks_recalled(self, wid: int, task_ids: Iterable[int]) -> list[Action]:
        """The worker gave back these tasks, never started: they are queued again first."""
        worker = self._workers[wid]
        returned = [t for t in worker.drop(set(task_ids)) if not self._forget_cancelled(t)]
        self._pending.extendleft(reversed(returned))
        return self._after_work(worker)

    def _after_work(self, worker: _Worker) -> list[Action]:
        """The worker's queue shrank: retire it if due once idle, and hand out work."""
        if worker.tasks or worker.phase is not _Phase.BUSY:
            return self._dispatch()
        worker.phase = _Phase.IDLE
        actions: list[Action] = []
        if worker.retiring or (self.maxtasks is not None and worker.completed >= self.maxtasks):
            worker.phase = _Phase.LEAVING
            actions.append(Stop(worker.wid))
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
                actions.append(Lost(running, FailReason.WORKER_LOST, wid))
            if self.state is Lifecycle.BROKEN:
                actions += self._fail_pending()
        if worker.phase is _Phase.STARTING:
            self._startup_failures += 1
            if self._startup_failures >= MAX_STARTUP_FAILURES:
                return actions + self.break_pool()
        return actions + self._replenish() + self._dispatch()

    def send_failed(self, wid: int, task_ids: tuple[int, ...]) -> list[Action]:
        """A batch could not be sent (the worker's channel is closed): the worker never had it.
        Queue it again at the head; send that worker nothing more (its exit is on its way)."""
        worker = self._workers[wid]
        unsent = [t for t in worker.drop(set(task_ids)) if not self._forget_cancelled(t)]
        worker.phase = _Phase.LEAVING
        self._pending.extendleft(reversed(unsent))
        if self.state is Lifecycle.BROKEN:
            return self._fail_pending()
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
        return self._fail_pending() + self._wind_down()

    def timed_out(self, task_id: int) -> list[Action]:
        """The task's attempt ran past its deadline: kill the worker running it, report the
        attempt lost. (A task with a deadline travels alone, so nothing else is lost with it.)"""
        for worker in self._workers.values():
            if worker.tasks and worker.tasks[0].task_id == task_id:
                if worker.phase is _Phase.LEAVING:
                    return []  # killed already (its task was cancelled): its exit says the rest
                worker.phase = _Phase.LEAVING
                running, *unstarted = worker.release()
                self._pending.extendleft(reversed(unstarted))
                lost: list[Action] = []
                if not self._forget_cancelled(running):
                    lost.append(Lost(running, FailReason.TIMED_OUT, worker.wid))
                return [Kill(worker.wid), *lost, *self._replenish(), *self._dispatch()]
        return []  # it ended meanwhile

    def cancel(self, task_ids: Iterable[int]) -> list[Action]:
        """The caller cancelled these tasks (the task core has failed them): stop them,
        wherever they are.

        A queued task is dropped; a running one is stopped by killing its worker (which is
        replaced, and whose other tasks go back to the queue); one queued behind another in a
        worker is recalled, and should the worker have started it by then, its report is ignored.
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
                queued = tuple(i for i in hit if i != held[0] and i not in worker.recalling)
                if queued:
                    worker.recalling.update(queued)
                    actions.append(Recall(worker.wid, queued))
        if not found:
            return []
        return actions + self._replenish() + self._dispatch()

    def close(self) -> list[Action]:
        """No more tasks will come: run what is pending, then stop the workers."""
        if self.state is Lifecycle.RUN:
            self.state = Lifecycle.CLOSE
        return self._dispatch()

    def terminate(self) -> list[Action]:
        """Stop now: drop every task (the task core fails them all), kill every worker."""
        if self.state is Lifecycle.TERMINATE:
            return []
        self.state = Lifecycle.TERMINATE
        self._pending.clear()
        self._cancelled.clear()
        actions: list[Action] = []
        for worker in self._workers.values():
            worker.release()
            worker.phase = _Phase.LEAVING
            actions.append(Kill(worker.wid))
        return actions

    # -- decisions ----------------------------------------------------------------------------

    def _forget_cancelled(self, task: TaskInfo) -> bool:
        """True (and forget it) if the task was cancelled while a worker held it."""
        if task.task_id in self._cancelled:
            self._cancelled.discard(task.task_id)
            return True
        return False

    def _wants_workers(self) -> bool:
        if self.state is Lifecycle.RUN:
            return True
        return self.state is Lifecycle.CLOSE and bool(self._pending)

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
        """Hand pending tasks to idle workers, then top up busy ones (flow control), or
        recall queued work for idle workers when nothing is pending."""
        if self.state is Lifecycle.BROKEN:
            # No worker will come to run them: whatever was queued again (a recall answered,
            # a cancelled worker's queue) fails now, never strands in a finished policy.
            return self._fail_pending() + self._wind_down()
        actions: list[Action] = []
        if self._pending:
            # Pending work is shared out evenly: first among the idle workers and those still
            # starting (so that the first ready do not take it all), then what is left among
            # the busy workers that may take more and, again, those starting.
            starting = sum(w.phase is _Phase.STARTING for w in self._workers.values())
            idle = [w for w in self._workers.values() if w.phase is _Phase.IDLE]
            share = _ceil_div(len(self._pending), len(idle) + starting)
            for worker in idle:
                if self._pending:
                    actions.append(self._send(worker, self._room(worker, share)))
            limit = self._in_flight_limit()
            # Topped up once its queue is down to half the limit, so that each frame carries
            # many tasks rather than one per task finished.
            busy = [
                w
                for w in self._workers.values()
                if w not in idle and len(w.tasks) <= limit // 2 and w.phase is _Phase.BUSY
            ]
            for worker in busy:
                if self._pending and self._may_queue_behind(worker):
                    share = _ceil_div(len(self._pending), len(busy) + starting)
                    room = self._room(worker, share)
                    if room > 0:
                        actions.append(self._send(worker, room))
        if not self._pending:
            if self._wants_workers():
                actions += self._recall_for_idle()
            else:
                actions += self._wind_down()
        return actions

    def _in_flight_limit(self) -> int:
        """Tasks a worker may hold: the running one and enough measured work behind it."""
        if self.ahead_seconds <= 0:
            return 1
        if self.task_seconds is None:
            return 2  # nothing measured yet: one queued behind, to measure without stranding
        ahead = self.ahead_seconds / max(self.task_seconds, 1e-7)
        return 1 + max(1, min(MAX_IN_FLIGHT - 1, int(ahead)))

    def _room(self, worker: _Worker, share: int) -> int:
        """How many more tasks the worker may be sent now: within its flow-control limit,
        its maxtasksperchild quota and its ``share`` of what is pending."""
        limit = self._in_flight_limit() - len(worker.tasks)
        if self.maxtasks is not None:
            limit = min(limit, self.maxtasks - worker.completed - len(worker.tasks))
        return min(limit, share)

    def _may_queue_behind(self, worker: _Worker) -> bool:
        """Whether the next pending task may wait in this busy worker behind its running one."""
        first = self._pending[0]
        return (
            worker.phase is _Phase.BUSY
            and not worker.retiring
            and worker.tasks[0].timeout is None
            and first.prefetch
            and first.timeout is None
            and worker.held_bytes + first.size <= MAX_IN_FLIGHT_BYTES
            and all(t.prefetch for t in worker.tasks)  # never behind an apply task
        )

    def _send(self, worker: _Worker, limit: int) -> Send:
        """Send the worker its next pending tasks: the first, then more up to ``limit`` tasks
        and the byte bound.

        A task with a deadline travels alone and only to an idle worker, so that its deadline
        starts when it starts.
        """
        first = self._pending.popleft()
        worker.take(first)
        sent = [first.task_id]
        if first.timeout is None and first.prefetch:
            while len(sent) < limit and self._pending:
                task = self._pending[0]
                if (
                    task.timeout is not None
                    or not task.prefetch
                    or worker.held_bytes + task.size > MAX_IN_FLIGHT_BYTES
                ):
                    break
                worker.take(self._pending.popleft())
                sent.append(task.task_id)
        worker.phase = _Phase.BUSY
        return Send(worker.wid, tuple(sent))

    def _recall_for_idle(self) -> list[Action]:
        """Nothing is pending but a worker is idle: ask busy workers for the tasks queued
        behind their running ones, when those stand for enough work to be worth the trip."""
        # (This runs after every report while workers wait for input: a plain loop is cheapest.)
        for worker in self._workers.values():
            if worker.phase is _Phase.IDLE and not worker.retiring:
                break
        else:
            return []
        actions: list[Action] = []
        for worker in self._workers.values():
            if worker.phase is not _Phase.BUSY:
                continue
            # Cheap bound first: this runs after every report while workers wait for input.
            count = len(worker.tasks) - 1 - len(worker.recalling)
            if count <= 0 or (
                self.task_seconds is not None and self.task_seconds * count < RECALL_MIN_SECONDS
            ):
                continue
            queued = [
                t.task_id
                for t in list(worker.tasks)[1:]
                if t.task_id not in worker.recalling and t.task_id not in self._cancelled
            ]
            if not queued:
                continue
            if self.task_seconds is not None and (
                self.task_seconds * len(queued) < RECALL_MIN_SECONDS
            ):
                continue
            worker.recalling.update(queued)
            actions.append(Recall(worker.wid, tuple(queued)))
        return actions

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

    def _fail_pending(self) -> list[Action]:
        if not self._pending:
            return []
        failed = tuple(t.task_id for t in self._pending)
        self._pending.clear()
        return [Fail(failed)]


def _ceil_div(count: int, parts: int) -> int:
    return -(-count // max(1, parts))
