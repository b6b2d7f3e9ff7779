"""Unit tests of the policy's fault tolerance: lost attempts and the tasks the core runs again,
cancellation, the memory cap, failed sends, and a seeded random run, policy and task core driven
together as the scheduler drives them, that checks every task ends exactly once. No processes."""

from __future__ import annotations

import pickle
import random
from collections import Counter
from dataclasses import dataclass, field

import pytest

from _clock import FakeClock
from _sinks import Delivered, RecordingSink
from procpool._backend import PreparedTask
from procpool._errors import (
    InitializerError,
    PoolTerminatedError,
    TaskCancelledError,
    TaskTimeoutError,
    WorkerLostError,
)
from procpool._policy import (
    AHEAD_SECONDS,
    Fail,
    FailReason,
    Kill,
    Lifecycle,
    Lost,
    Policy,
    Recall,
    Send,
    Spawn,
    Stop,
    TaskInfo,
)
from procpool._protocol import Mode, Status, encode_exception
from procpool._tasks import TaskCore


def started(
    processes: int = 1,
    *,
    ahead: float = 0.0,
    max_memory: int | None = None,
    maxtasks: int | None = None,
    measured: float | None = None,
) -> Policy:
    """A policy whose initial workers have all reported ready (with nothing to do).
    ``ahead``: flow control's queued work per worker (0: one task at a time; before anything
    is measured, AHEAD_SECONDS lets a worker hold two). ``measured``: worker 0 first ran a task
    (id -1) that took this many seconds."""
    policy = Policy(processes, maxtasks, ahead_seconds=ahead, max_memory=max_memory)
    for action in policy.start():
        assert policy.worker_ready(action.wid) == []
    if measured is not None:
        assert policy.submit([task(-1)]) == [Send(0, (-1,))]
        assert policy.task_done(0, -1, elapsed=measured) == []
    return policy


def task(task_id: int, *, timeout: float | None = None, size: int = 10) -> TaskInfo:
    return TaskInfo(task_id, timeout, size)


def tasks(*ids: int, size: int = 10) -> list[TaskInfo]:
    return [task(i, size=size) for i in ids]


def died(task_id: int, wid: int) -> Lost:
    """The report of an attempt at task ``task_id`` (as ``task`` makes it) lost with ``wid``."""
    return Lost(task(task_id), FailReason.WORKER_LOST, wid)


def overran(task_id: int, wid: int, timeout: float) -> Lost:
    """The report of an attempt at task ``task_id`` that timed out on ``wid``."""
    return Lost(task(task_id, timeout=timeout), FailReason.TIMED_OUT, wid)


def of(actions: list, kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def failed_ids(actions: list) -> set[int]:
    """The tasks that no worker will run (the pool broke)."""
    return {t for a in of(actions, Fail) for t in a.task_ids}


# -- lost attempts, and the tasks the core runs again -------------------------------------------
# (Whether a task runs again, and how many times, is the task core's: test_tasks.py.)


def test_a_task_run_again_after_a_loss_is_queued_first_in_line() -> None:
    policy = started(1)
    assert policy.submit([task(1), task(2)]) == [Send(0, (1,))]
    assert policy.worker_exited(0) == [died(1, 0), Spawn(1)]
    assert policy.requeue(task(1)) == []  # the replacement is not ready yet
    assert policy.pending_count == 2
    # Queued again ahead of task 2, which was submitted before the retry.
    assert policy.worker_ready(1) == [Send(1, (1,))]
    assert policy.worker_exited(1) == [died(1, 1), Spawn(2)]
    # The core failed it this time (no requeue): task 2 is next.
    assert policy.worker_ready(2) == [Send(2, (2,))]


def test_a_task_run_again_goes_to_the_first_worker_free() -> None:
    policy = started(2)
    assert policy.submit(tasks(1, 2, 3, 4)) == [Send(0, (1,)), Send(1, (2,))]
    assert policy.worker_exited(0) == [died(1, 0), Spawn(2)]
    assert policy.requeue(task(1)) == []
    # The first worker free takes the retried task before 3 and 4.
    assert policy.task_done(1, 2) == [Send(1, (1,))]
    assert policy.worker_ready(2) == [Send(2, (3,))]


def test_only_the_running_task_of_a_dead_worker_is_reported_lost() -> None:
    """The tasks it held but had not started go back to the queue: no attempt was lost."""
    policy = started(1, ahead=AHEAD_SECONDS)
    # The worker holds 0 (running) and 1 (not started).
    assert policy.submit(tasks(*range(8))) == [Send(0, (0, 1))]
    assert policy.worker_exited(0) == [died(0, 0), Spawn(1)]
    assert policy.pending_count == 7  # 1 went back first in line
    assert policy.requeue(task(0)) == []
    assert policy.pending_count == 8  # 0 ahead of 1
    assert policy.worker_ready(1) == [Send(1, (0, 1))]
    assert policy.task_done(1, 0) == [Send(1, (2,))]
    # Now 1 was running: it is the one lost; 2, behind it, had not started.
    assert policy.worker_exited(1) == [died(1, 1), Spawn(2)]
    assert policy.worker_ready(2) == [Send(2, (2, 3))]


def test_unstarted_tasks_are_requeued_behind_the_retried_one_in_order() -> None:
    policy = started(1, ahead=1.0, measured=0.25)  # 1 + 1.0 / 0.25 = 5 in flight
    assert policy.submit(tasks(*range(16))) == [Send(0, (0, 1, 2, 3, 4))]
    assert policy.task_done(0, 0) == []
    assert policy.worker_exited(0) == [died(1, 0), Spawn(1)]
    assert policy.requeue(task(1)) == []
    assert policy.worker_ready(1) == [Send(1, (1, 2, 3, 4, 5))]


def test_a_task_run_again_after_close_gets_a_worker() -> None:
    """Closed, nothing else pending: the dead worker is not replaced when it dies (nothing
    waits), but the task the core then runs again needs one. (Without it, join() hung.)"""
    policy = started(1)
    policy.submit([task(1)])
    assert policy.close() == []
    assert policy.worker_exited(0) == [died(1, 0)]
    assert policy.requeue(task(1)) == [Spawn(1)]
    assert not policy.finished
    assert policy.worker_ready(1) == [Send(1, (1,))]
    assert policy.task_done(1, 1) == [Stop(1)]
    assert policy.worker_exited(1) == []
    assert policy.finished


def test_requeue_spawns_no_worker_beyond_the_pools_size() -> None:
    policy = started(2)
    policy.submit(tasks(1, 2))
    assert policy.worker_exited(0) == [died(1, 0), Spawn(2)]
    assert policy.requeue(task(1)) == []  # worker 2 is on its way
    assert policy.worker_ready(2) == [Send(2, (1,))]


# -- timeouts -----------------------------------------------------------------------------------


def test_a_timed_out_task_run_again_gets_a_fresh_worker_each_time() -> None:
    policy = started(1)
    assert policy.submit([task(1, timeout=5.0)]) == [Send(0, (1,))]
    timed_out = overran(1, 0, 5.0)
    assert policy.timed_out(1) == [Kill(0), timed_out, Spawn(1)]
    assert policy.requeue(timed_out.task) == []
    assert policy.worker_exited(0) == []  # killed for the timeout: nothing more happens
    assert policy.worker_ready(1) == [Send(1, (1,))]
    assert policy.timed_out(1) == [Kill(1), overran(1, 1, 5.0), Spawn(2)]


def test_timeout_retry_is_dispatched_to_an_idle_worker_at_once() -> None:
    """The retried task heads the queue while worker 1 idles: it is sent right away, not only
    once the killed worker's exit is noticed."""
    policy = started(2)
    assert policy.submit([task(1, timeout=5.0)]) == [Send(0, (1,))]
    actions = policy.timed_out(1)
    assert actions == [Kill(0), overran(1, 0, 5.0), Spawn(2)]
    assert policy.requeue(task(1, timeout=5.0)) == [Send(1, (1,))]
    assert policy.pending_count == 0


def test_late_report_after_a_timeout_retry_is_not_accepted() -> None:
    """The killed worker's result may still be in its channel: the policy ignores it (the task
    is no longer in flight there) and keeps the retry queued."""
    policy = started(1)
    policy.submit([task(1, timeout=5.0)])
    policy.timed_out(1)
    policy.requeue(task(1, timeout=5.0))
    assert 1 not in policy.in_flight(0)
    assert not policy.expects_report(0, 1)
    assert policy.task_done(0, 1) == []
    assert policy.pending_count == 1
    assert policy.worker_exited(0) == []
    assert policy.worker_ready(1) == [Send(1, (1,))]


# -- a task that raised an exception worth a retry ----------------------------------------------


def test_task_done_again_queues_the_task_first_in_line() -> None:
    policy = started(1)
    assert policy.submit([task(1), task(2)]) == [Send(0, (1,))]
    # Run again first in line: the now idle worker takes it again before task 2.
    assert policy.task_done(0, 1, again=True) == [Send(0, (1,))]
    # Delivered this time (the core said so: no again).
    assert policy.task_done(0, 1) == [Send(0, (2,))]
    assert policy.task_done(0, 2) == []


def test_task_done_again_with_tasks_queued_requeues_only_that_task() -> None:
    policy = started(1, ahead=AHEAD_SECONDS)
    assert policy.submit(tasks(*range(8))) == [Send(0, (0, 1))]
    # Task 0 goes back first in line, and so is the one topping the worker up.
    assert policy.task_done(0, 0, again=True) == [Send(0, (0,))]
    assert policy.in_flight(0) == (1, 0)
    assert policy.pending_count == 6


def test_task_done_again_after_close_keeps_a_worker_for_it() -> None:
    policy = started(1, maxtasks=1)
    policy.submit([task(1)])
    policy.close()
    # Retired by maxtasksperchild, but its task runs again: a replacement comes for it.
    assert policy.task_done(0, 1, again=True) == [Stop(0), Spawn(1)]
    assert policy.worker_ready(1) == [Send(1, (1,))]
    assert policy.task_done(1, 1) == [Stop(1)]
    policy.worker_exited(0)
    policy.worker_exited(1)
    assert policy.finished


# -- once the pool is broken or terminated ------------------------------------------------------
# (The core runs nothing again then: test_tasks.py. The policy still reports what happened.)


def broken_with_task_running(timeout: float | None = None) -> Policy:
    """Two workers: 0 runs task 1, 1 was still starting when the pool broke (and is killed)."""
    policy = Policy(2, ahead_seconds=0.0)
    policy.start()
    policy.worker_ready(0)
    assert policy.submit([task(1, timeout=timeout)]) == [Send(0, (1,))]
    assert policy.break_pool() == [Kill(1)]
    return policy


def test_death_once_broken_is_reported_lost() -> None:
    policy = broken_with_task_running()
    assert policy.worker_exited(0) == [died(1, 0)]
    assert policy.worker_exited(1) == []
    assert policy.finished


def test_report_once_broken_stops_the_worker() -> None:
    policy = broken_with_task_running()
    assert policy.task_done(0, 1) == [Stop(0)]


def test_timeout_once_broken_is_reported_lost() -> None:
    policy = broken_with_task_running(timeout=1.0)
    assert policy.timed_out(1) == [Kill(0), overran(1, 0, 1.0)]


def test_a_task_queued_again_once_broken_fails() -> None:
    """Should a task be queued again after the break (the core does not, today), no worker will
    run it: it fails rather than strands."""
    policy = broken_with_task_running()
    assert policy.worker_exited(0) == [died(1, 0)]
    assert policy.requeue(task(1)) == [Fail((1,))]


def test_nothing_runs_again_once_terminated() -> None:
    policy = started(2)
    policy.submit([task(1), task(2, timeout=1.0)])
    assert policy.terminate() == [Kill(0), Kill(1)]
    assert policy.timed_out(2) == []
    assert policy.task_done(0, 1, again=True) == []
    assert policy.worker_exited(0) == []
    assert policy.worker_exited(1) == []
    assert policy.pending_count == 0
    assert policy.finished


# -- cancellation -------------------------------------------------------------------------------


def test_cancel_unknown_ids_returns_nothing() -> None:
    policy = started(1)
    assert policy.cancel([]) == []
    assert policy.cancel([42]) == []
    policy.submit([task(1)])
    policy.task_done(0, 1)
    assert policy.cancel([1]) == []  # already finished


def test_cancel_pending_task_drops_it() -> None:
    policy = started(1)
    assert policy.submit(tasks(1, 2, 3)) == [Send(0, (1,))]
    assert policy.cancel([2, 99]) == []  # dropped from the queue: nothing else to do
    assert policy.pending_count == 1
    assert policy.task_done(0, 1) == [Send(0, (3,))]


def test_cancel_last_task_after_close_winds_down() -> None:
    policy = started(2)
    policy.submit(tasks(1, 2, 3))
    policy.close()
    assert policy.task_done(1, 2) == [Send(1, (3,))]
    assert policy.cancel([3]) == [Kill(1)]
    assert policy.task_done(0, 1) == [Stop(0)]
    policy.worker_exited(0)
    assert not policy.finished
    assert policy.worker_exited(1) == []
    assert policy.finished


def test_cancel_running_task_kills_its_worker_and_requeues_the_rest() -> None:
    policy = started(1, ahead=AHEAD_SECONDS)
    assert policy.submit(tasks(*range(8))) == [Send(0, (0, 1))]
    assert policy.cancel([0]) == [Kill(0), Spawn(1)]
    assert policy.pending_count == 7  # 1 went back, ahead of the others
    assert policy.in_flight(0) == ()
    assert policy.task_done(0, 0) == []  # a late report from the killed worker
    assert policy.worker_exited(0) == []  # nothing more failed, no second replacement
    assert policy.worker_ready(1) == [Send(1, (1, 2))]


def test_cancel_running_and_unstarted_tasks_of_one_worker() -> None:
    policy = started(1, ahead=AHEAD_SECONDS)
    assert policy.submit(tasks(*range(8))) == [Send(0, (0, 1))]
    assert policy.cancel([1, 0]) == [Kill(0), Spawn(1)]
    assert policy.pending_count == 6
    policy.worker_exited(0)
    assert policy.worker_ready(1) == [Send(1, (2, 3))]


def test_cancelled_running_timed_task_does_not_time_out() -> None:
    policy = started(1)
    policy.submit([task(1, timeout=5.0)])
    assert policy.cancel([1]) == [Kill(0), Spawn(1)]
    assert policy.timed_out(1) == []  # its worker is being killed already
    assert policy.worker_exited(0) == []


def test_cancel_on_several_workers_kills_and_replaces_each() -> None:
    policy = started(2)
    policy.submit(tasks(1, 2, 3))
    actions = policy.cancel([3, 1, 2])
    assert not of(actions, Fail)  # the task core fails cancelled tasks
    assert set(of(actions, Kill)) == {Kill(0), Kill(1)}
    assert len(of(actions, Spawn)) == 2
    assert policy.pending_count == 0


def queued_behind() -> Policy:
    """One worker running task 0, with task 1 queued behind it and task 2 pending."""
    policy = started(1, ahead=AHEAD_SECONDS)  # nothing measured: two tasks in flight
    assert policy.submit(tasks(0, 1, 2)) == [Send(0, (0, 1))]
    assert policy.pending_count == 1
    return policy


def test_cancel_queued_task_recalls_it_and_keeps_the_worker() -> None:
    policy = queued_behind()
    assert policy.cancel([1]) == [Recall(0, (1,))]
    assert policy.in_flight(0) == (0, 1)  # until the worker answers
    # The worker gives it back unstarted: dropped, not queued again.
    actions = policy.tasks_recalled(0, [1])
    assert actions == [Send(0, (2,))]  # room for the pending task behind 0
    assert policy.in_flight(0) == (0, 2)
    assert policy.pending_count == 0
    assert policy.task_done(0, 0) == []
    assert policy.task_done(0, 2) == []


def test_cancelled_task_started_before_its_recall_has_its_report_ignored() -> None:
    policy = queued_behind()
    policy.cancel([1])
    assert policy.task_done(0, 0) == [Send(0, (2,))]
    assert policy.tasks_recalled(0, []) == []  # too late: 1 had started
    # Its report is ignored: not queued again, although the report says to.
    assert policy.task_done(0, 1, again=True) == []
    assert policy.in_flight(0) == (2,)
    assert policy.pending_count == 0
    assert policy.task_done(0, 2) == []


def test_cancelled_queued_task_is_not_requeued_on_death() -> None:
    policy = queued_behind()
    policy.cancel([1])
    assert policy.worker_exited(0) == [died(0, 0), Spawn(1)]
    assert policy.pending_count == 1
    assert policy.worker_ready(1) == [Send(1, (2,))]


def test_cancelled_queued_task_running_when_its_worker_dies() -> None:
    policy = queued_behind()
    policy.cancel([1])
    policy.task_done(0, 0)  # 1 now runs (the recall came too late); 2 is queued behind it
    assert policy.in_flight(0) == (1, 2)
    # 1 is not reported lost (it ended: cancelled); 2 had not started and goes back.
    assert policy.worker_exited(0) == [Spawn(1)]
    assert policy.worker_ready(1) == [Send(1, (2,))]


def test_cancelled_queued_task_is_not_requeued_when_the_send_fails() -> None:
    policy = queued_behind()
    policy.cancel([1])
    assert policy.send_failed(0, (0, 1)) == [Spawn(1)]
    assert policy.pending_count == 2  # 0 back first in line, then 2; not 1
    assert policy.worker_ready(1) == [Send(1, (0, 2))]


def test_cancel_running_task_does_not_requeue_an_already_cancelled_one() -> None:
    """Task 1 (queued) was cancelled; then task 0, running on the same worker, is. The worker
    is killed and its unstarted tasks go back to the queue, but not 1: the core failed it
    already. Re-queued, it would run again and, in the scheduler (the core has forgotten it),
    its Send would fail an assertion."""
    policy = queued_behind()
    assert policy.cancel([1]) == [Recall(0, (1,))]
    assert policy.cancel([0]) == [Kill(0), Spawn(1)]
    assert policy.pending_count == 1
    assert policy.worker_ready(1) == [Send(1, (2,))]


def test_cancel_of_an_already_cancelled_task_does_nothing() -> None:
    """A cancelled task that a worker still holds is not 'known' any more: cancelling it again
    must not recall it again nor kill its worker (the scheduler only cancels live tasks, so
    this is the policy's own contract rather than a path the scheduler takes today)."""
    policy = queued_behind()
    policy.cancel([1])
    assert policy.cancel([1]) == []
    policy.task_done(0, 0)  # now 1 runs
    assert policy.cancel([1]) == []


def test_cancel_after_break_fails_the_killed_workers_unstarted_tasks() -> None:
    """The pool broke while its worker ran 0 with 1 queued behind; then 0 is cancelled. The
    worker is killed and 1, never started, goes back to the queue; but no worker will ever take
    it (the pool is broken). Like the unstarted tasks of a worker that dies after the break
    (test_policy.py's test_death_after_break_fails_unstarted_tasks) it must fail (Fail), not
    wait in the queue of a policy that says it has finished: the scheduler would then exit and
    leave it unresolved."""
    policy = queued_behind()
    assert failed_ids(policy.break_pool()) == {2}
    actions = policy.cancel([0])
    assert Kill(0) in actions
    actions += policy.worker_exited(0)
    assert failed_ids(actions) == {1}
    assert policy.pending_count == 0
    assert policy.finished


def test_tasks_given_back_after_break_by_a_retiring_worker_fail_broken() -> None:
    """A recall's answer comes after the pool broke, from a worker that went over the memory
    cap: it is stopped once idle and none replaces it, so the tasks it gave back can never run.
    They must fail (Fail) rather than strand in the queue of a finished policy."""
    policy = started(2, ahead=AHEAD_SECONDS, max_memory=1000)
    assert policy.submit(tasks(0, 1)) == [Send(0, (0,)), Send(1, (1,))]
    assert policy.submit(tasks(2, 3)) == [Send(0, (2,)), Send(1, (3,))]
    assert policy.task_done(0, 0) == []
    assert policy.task_done(0, 2) == [Recall(1, (3,))]
    assert policy.break_pool() == [Stop(0)]
    assert policy.task_done(1, 1, resident=5000) == []
    actions = policy.tasks_recalled(1, [3])
    assert Stop(1) in actions
    actions += policy.worker_exited(0) + policy.worker_exited(1)
    assert failed_ids(actions) == {3}
    assert policy.pending_count == 0
    assert policy.finished


# -- the memory cap -----------------------------------------------------------------------------


def test_worker_over_the_memory_cap_is_replaced() -> None:
    policy = started(1, max_memory=1000)
    assert policy.submit(tasks(1, 2)) == [Send(0, (1,))]
    assert policy.task_done(0, 1, resident=1001) == [Stop(0), Spawn(1)]
    assert policy.pending_count == 1  # task 2 waits for the replacement
    assert policy.worker_ready(1) == [Send(1, (2,))]
    assert policy.worker_exited(0) == []
    assert policy.worker_ids() == [1]


@pytest.mark.parametrize("resident", [0, 1, 1000])
def test_worker_at_or_under_the_cap_or_unmeasured_is_kept(resident: int) -> None:
    policy = started(1, max_memory=1000)
    policy.submit(tasks(1, 2))
    assert policy.task_done(0, 1, resident=resident) == [Send(0, (2,))]
    assert policy.task_done(0, 2, resident=resident) == []
    assert policy.worker_ids() == [0]


def test_no_memory_cap_keeps_any_worker() -> None:
    policy = started(1)
    policy.submit(tasks(1, 2))
    assert policy.task_done(0, 1, resident=10**12) == [Send(0, (2,))]


def test_retiring_worker_finishes_its_queued_tasks_first() -> None:
    policy = started(1, ahead=AHEAD_SECONDS, max_memory=1000)
    assert policy.submit(tasks(*range(8))) == [Send(0, (0, 1))]
    # Over the cap: it is let finish what it holds, and sent nothing more.
    assert policy.task_done(0, 0, resident=5000) == []
    assert policy.in_flight(0) == (1,)
    assert policy.task_done(0, 1, resident=10) == [Stop(0), Spawn(1)]  # the mark sticks
    assert policy.worker_ready(1) == [Send(1, (2, 3))]


def test_retiring_worker_is_not_topped_up() -> None:
    """Once over the cap a worker is only let finish what it holds: topping it up would keep it
    busy, and over the cap, for as long as work keeps coming."""
    policy = started(1, ahead=1.0, measured=0.25, max_memory=1000)  # 5 in flight
    assert policy.submit(tasks(*range(20))) == [Send(0, (0, 1, 2, 3, 4))]
    assert policy.task_done(0, 0, resident=5000) == []
    for i in (1, 2, 3):  # down to one held: a worker under the cap would be topped up
        assert policy.task_done(0, i) == []
    assert policy.task_done(0, 4) == [Stop(0), Spawn(1)]
    assert policy.worker_ready(1) == [Send(1, (5, 6, 7, 8, 9))]


def test_retiring_worker_with_a_task_run_again() -> None:
    policy = started(1, max_memory=1000)
    policy.submit([task(1)])
    assert policy.task_done(0, 1, again=True, resident=2000) == [Stop(0), Spawn(1)]
    assert policy.worker_ready(1) == [Send(1, (1,))]


def test_retiring_worker_after_close_is_not_replaced_without_work() -> None:
    policy = started(2, max_memory=1000)
    policy.submit(tasks(1))
    assert policy.close() == [Stop(1)]
    assert policy.task_done(0, 1, resident=2000) == [Stop(0)]
    policy.worker_exited(0)
    policy.worker_exited(1)
    assert policy.finished


# -- failed sends -------------------------------------------------------------------------------


def test_send_failed_requeues_the_batch_at_the_head() -> None:
    policy = started(2)
    assert policy.submit(tasks(1, 2, 3)) == [Send(0, (1,)), Send(1, (2,))]
    assert policy.send_failed(0, (1,)) == [Spawn(2)]
    assert policy.in_flight(0) == ()
    assert policy.pending_count == 2
    assert policy.task_done(1, 2) == [Send(1, (1,))]  # 1 ahead of 3
    assert policy.worker_ready(2) == [Send(2, (3,))]
    assert policy.worker_exited(0) == []  # it never had the batch: nothing fails


def test_send_failed_worker_is_sent_nothing_more() -> None:
    policy = started(1, ahead=AHEAD_SECONDS)
    assert policy.submit(tasks(0, 1, 2)) == [Send(0, (0, 1))]
    assert policy.task_done(0, 0) == [Send(0, (2,))]  # topped up: this Send fails
    assert policy.send_failed(0, (2,)) == [Spawn(1)]
    assert policy.in_flight(0) == (1,)  # the tasks it did receive are still its own
    assert policy.submit(tasks(3)) == []
    assert policy.task_done(0, 1) == []  # not idle again, not stopped: its exit is coming
    assert policy.worker_ready(1) == [Send(1, (2, 3))]
    assert policy.worker_exited(0) == []


def test_send_failed_loses_no_attempt() -> None:
    """The worker never had the task: its exit reports nothing lost, and should the task's
    deadline pass meanwhile (it started when it was sent) there is nothing to kill."""
    policy = started(1)
    assert policy.submit([task(1, timeout=5.0)]) == [Send(0, (1,))]
    assert policy.send_failed(0, (1,)) == [Spawn(1)]
    assert policy.timed_out(1) == []
    assert policy.worker_exited(0) == []
    assert policy.worker_ready(1) == [Send(1, (1,))]


def test_send_failed_once_broken_fails_the_batch() -> None:
    policy = Policy(2)
    policy.start()
    policy.worker_ready(0)
    policy.submit(tasks(1))
    policy.break_pool()
    assert policy.send_failed(0, (1,)) == [Fail((1,))]
    policy.worker_exited(0)
    policy.worker_exited(1)
    assert policy.finished


# -- a seeded random run: every task ends exactly once ------------------------------------------

RESULT = memoryview(pickle.dumps("result"))
RAISED = memoryview(encode_exception(ValueError("flaky")))
# What a task may end with, and why.
ERRORS = (WorkerLostError, TaskTimeoutError, TaskCancelledError, PoolTerminatedError)


@dataclass
class SimWorker:
    state: str = "starting"  # starting, up, stopping (told to stop), killed
    queue: list[int] = field(default_factory=list)  # sent and not yet reported, in run order
    recalls: list[tuple[int, ...]] = field(default_factory=list)  # asked back, not answered
    over_cap: bool = False  # it reported more memory than the cap: it must get nothing more


class World:
    """Plays the workers around a policy and a task core, and drives the two as the scheduler
    (``_scheduler.ProcessBackend``) does, checking what they ask for.

    Each submitted batch goes to one sink, or each of its tasks to a sink of its own (as a map's
    chunks and apply_async calls do); a task ends when the core sends its sink an outcome. The
    run checks that each ends exactly once, is run again only as often as its ``retries`` allow
    and only while the pool runs, and carries the record of its earlier attempts.
    """

    def __init__(self, seed: int) -> None:
        self.rng = rng = random.Random(seed)
        self.clock = FakeClock()
        self.core = TaskCore(self.clock)
        self.policy = Policy(
            rng.randint(1, 3),
            rng.choice([None, None, 3]),
            ahead_seconds=rng.choice([0.0, AHEAD_SECONDS]),
            max_memory=rng.choice([None, 1000]),
        )
        self.workers: dict[int, SimWorker] = {}
        self.tasks: dict[int, PreparedTask] = {}  # by the core's id
        self.sinks: list[tuple[RecordingSink, int]] = []  # each sink and how many tasks it has
        self.runs_again: Counter[int] = Counter()  # times the core ran each task again
        self.reported: dict[int, Status] = {}  # how the report that ended a task said it ended
        self.terminated = False
        self.log: list[str] = []
        self.busy_rate = rng.choice([0.2, 1.0])  # light load leaves workers idle at times

    # -- the scheduler's side: carrying out actions ------------------------------------------

    def apply(self, actions: list) -> None:
        self.log.append(f"  -> {actions}")
        for action in actions:
            if isinstance(action, Spawn):
                assert action.wid not in self.workers, self.trace()
                if self.rng.random() < 0.005:
                    self.call("spawn_failed", action.wid)
                else:
                    self.workers[action.wid] = SimWorker()
            elif isinstance(action, Send):
                self.send(action)
            elif isinstance(action, Stop):
                worker = self.workers[action.wid]
                assert worker.state == "up", self.trace()
                assert worker.queue == [], self.trace(f"Stop to busy worker {action.wid}")
                worker.state = "stopping"
            elif isinstance(action, Kill):
                self.workers[action.wid].state = "killed"
            elif isinstance(action, Recall):
                worker = self.workers[action.wid]
                assert worker.state in ("up", "killed"), self.trace(f"Recall to {worker.state}")
                assert set(action.task_ids) <= set(worker.queue[1:]), self.trace(
                    "Recall of a task the worker does not hold queued"
                )
                worker.recalls.append(action.task_ids)
            elif isinstance(action, Fail):
                assert self.core.broken is not None, self.trace("Fail while the pool runs")
                for tid in action.task_ids:
                    assert self.core.task(tid) is not None, self.trace(f"Fail of ended {tid}")
                self.core.fail(action.task_ids, self.core.final_error)
            elif isinstance(action, Lost):
                self.lost(action)
            else:  # pragma: no cover
                raise AssertionError(action)

    def send(self, action: Send) -> None:
        worker = self.workers[action.wid]
        for tid in action.task_ids:
            task = self.core.task(tid)
            assert task is not None, self.trace(f"task {tid} sent after it ended")
            if task.timeout is not None:
                self.core.started(tid)
            for wid, other in self.workers.items():
                if other.state != "killed":
                    assert tid not in other.queue, self.trace(f"task {tid} already on {wid}")
        assert worker.state in ("up", "killed"), self.trace(f"Send to {worker.state} worker")
        assert not worker.over_cap, self.trace(f"Send to worker {action.wid}, over the memory cap")
        if worker.state == "killed" or self.rng.random() < 0.02:
            # The channel is closed: the scheduler kills the worker and hands the batch back.
            worker.state = "killed"
            self.call("send_failed", action.wid, action.task_ids)
        else:
            worker.queue.extend(action.task_ids)

    def lost(self, action: Lost) -> None:
        """An attempt ended without an outcome: the core runs the task again, or fails it."""
        tid = action.task.task_id
        assert self.core.task(tid) is not None, self.trace(f"Lost of ended task {tid}")
        error = WorkerLostError if action.reason is FailReason.WORKER_LOST else TaskTimeoutError
        if self.core.ended(tid, f"was lost on worker {action.wid}", error):
            self.ran_again(tid)
            self.call("requeue", action.task)
        else:
            self.check_out_of_attempts(tid)

    def ran_again(self, tid: int) -> None:
        self.runs_again[tid] += 1
        assert self.runs_again[tid] <= self.tasks[tid].retries, self.trace(
            f"task {tid} run again more than it may"
        )
        assert not self.terminated, self.trace(f"task {tid} run again once terminated")
        assert self.core.broken is None, self.trace(f"task {tid} run again once broken")

    def check_out_of_attempts(self, tid: int) -> None:
        """A failed attempt ends the task only once it has no retry left (or none may run)."""
        if not self.terminated and self.core.broken is None:
            assert self.runs_again[tid] == self.tasks[tid].retries, self.trace(
                f"task {tid} ended after {self.runs_again[tid]} of {self.tasks[tid].retries} "
                "retries"
            )

    def call(self, name: str, *args: object, **kwargs: object) -> list:
        self.log.append(f"{name}{args}{kwargs or ''}")
        actions = getattr(self.policy, name)(*args, **kwargs) or []  # source_opened: None
        if self.policy.state is Lifecycle.BROKEN and self.core.broken is None:
            # As the scheduler does when workers keep dying on start-up or none can start.
            self.core.break_pool(InitializerError("workers keep dying before they are ready"))
        self.apply(actions)
        return actions

    def trace(self, message: str = "") -> str:
        return message + "\n" + "\n".join(self.log[-40:])

    # -- events ------------------------------------------------------------------------------

    def submit(self) -> None:
        count = self.rng.randint(1, 6)
        if self.rng.random() < 0.5:  # a map: its chunks' outcomes go to one result
            sink = RecordingSink()
            places = [(sink, index) for index in range(count)]
            self.sinks.append((sink, count))
        else:  # apply_async calls: a result each
            places = [(RecordingSink(), 0) for _ in range(count)]
            self.sinks += [(sink, 1) for sink, _ in places]
        batch = [
            PreparedTask(
                Mode.MAP,
                b"function",
                b"arguments",
                sink,
                index,
                "work",
                timeout=self.rng.choice([None, None, None, 0.5, 2.0, 4.0]),
                retries=self.rng.choice([0, 0, 1, 2, 3]),
                return_exceptions=self.rng.random() < 0.2,
            )
            for sink, index in places
        ]
        self.log.append(f"add({len(batch)})")
        ids = self.core.add(batch)  # new sinks each time: refused only at the pool's end
        if None in ids:  # terminated or broken: failed at once
            assert set(ids) == {None}, self.trace()
            assert self.terminated or self.core.broken is not None, self.trace()
            return
        self.tasks.update(zip(ids, batch, strict=True))  # type: ignore[arg-type]
        infos = [
            TaskInfo(tid, task.timeout, self.rng.choice([0, 10, 40, 200]), self.rng.random() < 0.8)
            for tid, task in zip(ids, batch, strict=True)
            if tid is not None
        ]
        self.call("submit", infos)

    def ready(self, wid: int) -> None:
        self.workers[wid].state = "up"
        self.call("worker_ready", wid)

    def report(self, wid: int, raised: bool) -> None:
        """The worker reports the first task in its queue: a result, or an exception."""
        tid = self.workers[wid].queue.pop(0)
        status = self.rng.choice([Status.RETRY, Status.ERROR]) if raised else Status.OK
        # A chunk that returns exceptions in place reports RETRY with its list of results.
        returns = self.tasks[tid].return_exceptions
        listed = status is Status.OK or (status is Status.RETRY and returns)
        payload = RESULT if listed else RAISED
        resident = self.rng.choice([0, 0, 500, 1500])
        elapsed = self.rng.choice([None, 1e-5, 1e-3, 0.05])
        again = False
        expected = self.policy.expects_report(wid, tid)
        if expected:
            # (Not expected: a late report, from a worker killed for a timeout or a cancel,
            # which the scheduler does not deliver.)
            live = self.core.task(tid) is not None  # else cancelled while queued behind
            again = self.core.completed(tid, status, payload, where=f"on worker {wid}")
            if again:
                self.ran_again(tid)
            elif live:
                self.reported[tid] = status
                if status is Status.RETRY:
                    self.check_out_of_attempts(tid)
        self.log.append(
            f"task_done({wid}, {tid}, {again}, resident={resident}, elapsed={elapsed}) "
            f"[{status.name}, expected={expected}]"
        )
        actions = self.policy.task_done(wid, tid, again, resident, elapsed)
        cap = self.policy.max_memory
        if expected and cap is not None and resident > cap:
            self.workers[wid].over_cap = True
        self.apply(actions)

    def answer_recall(self, wid: int) -> None:
        """The worker gives back the recalled tasks it has not started (all but its first)."""
        worker = self.workers[wid]
        asked = worker.recalls.pop(0)
        returned = [t for t in worker.queue[1:] if t in asked]
        worker.queue = [t for t in worker.queue if t not in returned]
        self.call("tasks_recalled", wid, returned)

    def exit(self, wid: int) -> None:
        del self.workers[wid]
        self.call("worker_exited", wid)

    def expire(self, seconds: float) -> bool:
        """Time passes; the attempts past their deadline are stopped. False if none was."""
        self.clock.advance(seconds)
        expired = self.core.expired()
        for tid in expired:
            self.call("timed_out", tid)
        return bool(expired)

    def cancel(self, sink: RecordingSink) -> None:
        live = set(self.core.ids_of(sink))
        self.log.append(f"core.cancel({live})")
        cancelled = self.core.cancel(sink)
        assert set(cancelled) == live, self.trace()
        actions = self.call("cancel", cancelled)
        assert not of(actions, Fail), self.trace()
        if not cancelled:
            assert actions == [], self.trace()
        for task in cancelled.values():
            assert type(sink.error(task.index)) is TaskCancelledError, self.trace()

    def terminate(self) -> None:
        self.terminated = True
        self.log.append("core.terminate()")
        self.core.terminate()
        actions = self.call("terminate")
        assert all(isinstance(a, Kill) for a in actions), self.trace()

    def break_pool(self) -> None:
        """The initializer raised."""
        self.log.append("core.break_pool()")
        self.core.break_pool(InitializerError("the pool's initializer raised"))
        self.call("break_pool")

    # -- checks --------------------------------------------------------------------------------

    def check_consistent(self) -> None:
        for wid, worker in self.workers.items():
            if worker.state in ("up", "stopping", "starting"):
                assert self.policy.in_flight(wid) == tuple(worker.queue), self.trace(
                    f"worker {wid}: policy {self.policy.in_flight(wid)} sim {worker.queue}"
                )
        assert sorted(self.policy.worker_ids()) == sorted(self.workers), self.trace()
        if self.workers:
            assert not self.policy.finished, self.trace("finished with workers alive")
        if self.policy.pending_count:
            idle = [w for w, s in self.workers.items() if s.state == "up" and not s.queue]
            assert not idle, self.trace(f"tasks wait while workers {idle} idle")
        # Every task the core has not ended is queued in the policy or held by a worker, once.
        live = set(self.core.unfinished())
        held = {t for wid in self.policy.worker_ids() for t in self.policy.in_flight(wid)}
        assert self.policy.pending_count == len(live - held), self.trace(
            f"pending {self.policy.pending_count}, live and not held {live - held}"
        )

    def check_outcomes(self) -> None:
        """Every task ended once, its sink told how its earlier attempts ended."""
        assert len(self.core) == 0, self.trace(f"tasks left unended: {self.core.unfinished()}")
        for sink, count in self.sinks:
            assert sorted(sink.ended()) == list(range(count)), self.trace(f"{sink.calls}")
        for tid, task in self.tasks.items():
            outcome = task.sink.outcome(task.index)  # type: ignore[attr-defined]
            again = self.runs_again[tid]
            if isinstance(outcome, Delivered):
                assert len(outcome.attempts) == again, self.trace(f"task {tid}: {outcome}")
                status = self.reported[tid]
                if status is Status.RETRY:
                    status = Status.OK if task.return_exceptions else Status.ERROR
                assert outcome.status is status, self.trace(f"task {tid}: {outcome}")
            else:
                self.check_error(outcome, again)

    def check_error(self, error: BaseException, again: int) -> None:
        if isinstance(error, InitializerError):
            assert self.core.broken is not None
            assert error is not self.core.broken  # a copy of its own
        else:
            assert isinstance(error, ERRORS), repr(error)
            assert self.terminated or not isinstance(error, PoolTerminatedError)
        notes = getattr(error, "__notes__", [])
        if again:
            assert len(notes) == 1, notes
            assert notes[0].count("\n  attempt ") == again, notes
        else:
            assert notes == [], notes

    # -- the run ---------------------------------------------------------------------------------

    def step(self) -> None:
        rng = self.rng
        by_state: dict[str, list[int]] = {}
        for wid, worker in self.workers.items():
            by_state.setdefault(worker.state, []).append(wid)
        busy = [wid for wid in by_state.get("up", []) if self.workers[wid].queue]
        late = [wid for wid in by_state.get("killed", []) if self.workers[wid].queue]
        recalled = [wid for wid in by_state.get("up", []) if self.workers[wid].recalls]
        leaving = by_state.get("stopping", []) + by_state.get("killed", [])
        roll = rng.random()
        if roll < 0.15 and self.policy.state in (Lifecycle.RUN, Lifecycle.BROKEN):
            if rng.random() < self.busy_rate:
                self.submit()  # once broken, the core fails what comes
        elif roll < 0.30 and by_state.get("starting"):
            self.ready(rng.choice(by_state["starting"]))
        elif roll < 0.55 and busy:
            self.report(rng.choice(busy), raised=rng.random() < 0.3)
        elif roll < 0.60 and recalled:
            self.answer_recall(rng.choice(recalled))
        elif roll < 0.63 and late:
            self.report(rng.choice(late), raised=rng.random() < 0.3)
        elif roll < 0.75 and leaving:
            self.exit(rng.choice(leaving))
        elif roll < 0.80 and self.workers:
            # A crash: mostly of a running worker, rarely of one still starting.
            if rng.random() < 0.95:
                if by_state.get("up"):
                    self.exit(rng.choice(by_state["up"]))
            elif by_state.get("starting"):
                self.exit(rng.choice(by_state["starting"]))
        elif roll < 0.88:
            self.expire(rng.uniform(0.0, 3.0))
        elif roll < 0.95 and self.tasks:
            # The sink of any task, or of one a worker runs, or of one waiting behind it.
            queues = [w.queue for w in self.workers.values() if w.state == "up" and w.queue]
            running = [q[0] for q in queues]
            waiting = [t for q in queues for t in q[1:]]
            every = list(self.tasks)
            tid = rng.choice(rng.choice([every, running or every, waiting or every]))
            self.cancel(self.tasks[tid].sink)  # type: ignore[arg-type]
        elif roll < 0.9805:
            self.break_pool()

    def drain(self) -> None:
        """After close: run everything out until the policy has finished, with a few more
        crashes once nothing is pending (the last tasks' losses, and their retries, are where
        a closed pool may forget to keep a worker)."""
        crashes = 5
        for _ in range(10_000):
            self.check_consistent()
            if self.policy.finished:
                return
            starting = [w for w, s in self.workers.items() if s.state == "starting"]
            busy = [w for w, s in self.workers.items() if s.state == "up" and s.queue]
            leaving = [w for w, s in self.workers.items() if s.state in ("stopping", "killed")]
            recalled = [w for w, s in self.workers.items() if s.state == "up" and s.recalls]
            if starting:
                self.ready(starting[0])
            elif recalled:
                self.answer_recall(recalled[0])
            elif leaving:  # first: a worker on its way out must not save one that is missing
                self.exit(leaving[0])
            elif busy and crashes and not self.policy.pending_count and self.rng.random() < 0.3:
                crashes -= 1
                self.exit(self.rng.choice(busy))
            elif busy:
                self.report(self.rng.choice(busy), raised=self.rng.random() < 0.2)
            elif not self.expire(10.0):
                raise AssertionError(self.trace("stuck: nothing can happen"))
        raise AssertionError(self.trace("did not finish"))


@pytest.mark.parametrize("ending", ["close", "terminate"])
@pytest.mark.parametrize("seed", range(24))
def test_random_faults_end_every_task_exactly_once(seed: int, ending: str) -> None:
    world = World(seed)
    world.call("start")
    world.submit()
    steps = 500
    for step in range(steps):
        if step == int(steps * 0.8):
            world.terminate() if ending == "terminate" else world.call("close")
        world.step()
        world.check_consistent()
    if world.policy.state is Lifecycle.RUN:
        world.terminate() if ending == "terminate" else world.call("close")
    world.drain()
    assert world.policy.finished
    assert world.policy.pending_count == 0
    assert world.workers == {}
    assert world.policy.worker_ids() == []
    world.check_outcomes()
    delivered = any(isinstance(o, Delivered) for s, _ in world.sinks for _, o in s.calls)
    assert delivered or world.core.broken is not None
