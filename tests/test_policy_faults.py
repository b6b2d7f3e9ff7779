"""Unit tests of the policy's fault tolerance: retries, cancellation, the memory cap, failed
sends, and a seeded random run that checks every task ends exactly once. No processes."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest

from _clock import FakeClock
from procpool._policy import (
    AHEAD_SECONDS,
    Fail,
    FailReason,
    Kill,
    Lifecycle,
    Policy,
    Recall,
    Retry,
    Send,
    Spawn,
    Stop,
    TaskInfo,
)


def started(
    processes: int = 1,
    *,
    ahead: float = 0.0,
    max_memory: int | None = None,
    maxtasks: int | None = None,
    measured: float | None = None,
) -> tuple[Policy, FakeClock]:
    """A policy whose initial workers have all reported ready (with nothing to do).
    ``ahead``: flow control's queued work per worker (0: one task at a time; before anything
    is measured, AHEAD_SECONDS lets a worker hold two). ``measured``: worker 0 first ran a task
    (id -1) that took this many seconds."""
    clock = FakeClock()
    policy = Policy(processes, maxtasks, clock=clock, ahead_seconds=ahead, max_memory=max_memory)
    for action in policy.start():
        assert policy.worker_ready(action.wid) == []
    if measured is not None:
        assert policy.submit([task(-1)]) == [Send(0, (-1,))]
        assert policy.task_done(0, -1, elapsed=measured) == []
    return policy, clock


def task(task_id: int, *, retries: int = 0, timeout: float | None = None, size: int = 10):
    return TaskInfo(task_id, timeout, size, retries=retries)


def tasks(*ids: int, retries: int = 0, size: int = 10) -> list[TaskInfo]:
    return [task(i, retries=retries, size=size) for i in ids]


def of(actions: list, kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def failed_ids(actions: list, reason: FailReason | None = None) -> set[int]:
    return {
        t for a in of(actions, Fail) if reason is None or a.reason is reason for t in a.task_ids
    }


# -- retries after a worker loss ---------------------------------------------------------------


def test_worker_loss_retries_until_attempts_run_out() -> None:
    policy, _ = started(1)
    assert policy.submit([task(1, retries=2), task(2)]) == [Send(0, (1,))]
    assert policy.worker_exited(0) == [Retry(1, FailReason.WORKER_LOST, 0), Spawn(1)]
    # Queued again ahead of task 2, which was submitted before the retry.
    assert policy.worker_ready(1) == [Send(1, (1,))]
    assert policy.worker_exited(1) == [Retry(1, FailReason.WORKER_LOST, 1), Spawn(2)]
    assert policy.worker_ready(2) == [Send(2, (1,))]
    # The third attempt was the last: the loss fails it.
    assert policy.worker_exited(2) == [Fail((1,), FailReason.WORKER_LOST, 2), Spawn(3)]
    assert policy.worker_ready(3) == [Send(3, (2,))]


def test_task_without_retries_fails_on_first_loss() -> None:
    policy, _ = started(1)
    policy.submit([task(1)])
    assert policy.worker_exited(0) == [Fail((1,), FailReason.WORKER_LOST, 0), Spawn(1)]


def test_retried_task_goes_to_the_head_of_the_queue() -> None:
    policy, _ = started(2)
    assert policy.submit([task(1, retries=1), task(2), task(3), task(4)]) == [
        Send(0, (1,)),
        Send(1, (2,)),
    ]
    assert policy.worker_exited(0) == [Retry(1, FailReason.WORKER_LOST, 0), Spawn(2)]
    # The first worker free takes the retried task before 3 and 4.
    assert policy.task_done(1, 2) == [Send(1, (1,))]
    assert policy.worker_ready(2) == [Send(2, (3,))]


def test_unstarted_tasks_of_a_dead_worker_are_requeued_without_an_attempt() -> None:
    policy, _ = started(1, ahead=AHEAD_SECONDS)
    # The worker holds 0 (running) and 1 (not started).
    assert policy.submit(tasks(*range(8), retries=1)) == [Send(0, (0, 1))]
    assert policy.worker_exited(0) == [Retry(0, FailReason.WORKER_LOST, 0), Spawn(1)]
    assert policy.pending_count == 8  # 0 (retried) first, then 1 (requeued), then the rest
    assert policy.worker_ready(1) == [Send(1, (0, 1))]
    assert policy.task_done(1, 0) == [Send(1, (2,))]
    # Now 1 was running: this is its first failed attempt, so it has one retry left.
    assert policy.worker_exited(1) == [Retry(1, FailReason.WORKER_LOST, 1), Spawn(2)]
    assert policy.worker_ready(2) == [Send(2, (1, 2))]
    # Its second loss is its last attempt; 2, behind it, had not started: no attempt for it.
    assert policy.worker_exited(2) == [Fail((1,), FailReason.WORKER_LOST, 2), Spawn(3)]
    assert policy.worker_ready(3) == [Send(3, (2, 3))]


def test_unstarted_tasks_are_requeued_behind_the_retried_one_in_order() -> None:
    policy, _ = started(1, ahead=1.0, measured=0.25)  # 1 + 1.0 / 0.25 = 5 in flight
    assert policy.submit(tasks(*range(16), retries=1)) == [Send(0, (0, 1, 2, 3, 4))]
    assert policy.task_done(0, 0) == []
    assert policy.worker_exited(0) == [Retry(1, FailReason.WORKER_LOST, 0), Spawn(1)]
    assert policy.worker_ready(1) == [Send(1, (1, 2, 3, 4, 5))]


# -- retries after a timeout --------------------------------------------------------------------


def test_timeout_retries_then_fails() -> None:
    policy, clock = started(1)
    assert policy.submit([task(1, retries=1, timeout=5.0)]) == [Send(0, (1,))]
    clock.advance(5.0)
    assert policy.expire() == [Kill(0), Retry(1, FailReason.TIMED_OUT, 0), Spawn(1)]
    assert policy.next_deadline() is None
    assert policy.worker_exited(0) == []  # killed for the timeout: nothing more happens
    assert policy.worker_ready(1) == [Send(1, (1,))]
    assert policy.next_deadline() == clock.now + 5.0  # a fresh deadline for the new attempt
    clock.advance(5.0)
    assert policy.expire() == [Kill(1), Fail((1,), FailReason.TIMED_OUT, 1), Spawn(2)]


def test_timeout_retry_is_dispatched_to_an_idle_worker_at_once() -> None:
    """The retried task heads the queue while worker 1 idles: it should be sent right away,
    as every other event does, not only once the killed worker's exit is noticed."""
    policy, clock = started(2)
    assert policy.submit([task(1, retries=1, timeout=5.0)]) == [Send(0, (1,))]
    clock.advance(5.0)
    actions = policy.expire()
    assert actions[:3] == [Kill(0), Retry(1, FailReason.TIMED_OUT, 0), Spawn(2)]
    assert Send(1, (1,)) in actions
    assert policy.pending_count == 0


def test_late_report_after_a_timeout_retry_is_not_accepted() -> None:
    """The killed worker's result may still be in its channel: the policy ignores it (the task
    is no longer in flight there) and keeps the retry queued."""
    policy, clock = started(1)
    policy.submit([task(1, retries=1, timeout=5.0)])
    clock.advance(5.0)
    policy.expire()
    assert 1 not in policy.in_flight(0)
    assert policy.task_done(0, 1) == []
    assert policy.pending_count == 1
    assert policy.worker_exited(0) == []
    assert policy.worker_ready(1) == [Send(1, (1,))]


# -- retries after a retryable exception --------------------------------------------------------


def test_retryable_exception_retries_then_delivers() -> None:
    policy, _ = started(1)
    assert policy.submit([task(1, retries=1), task(2)]) == [Send(0, (1,))]
    # Retried first in line: the now idle worker takes it again before task 2.
    assert policy.task_done(0, 1, retryable=True) == [
        Retry(1, FailReason.RAISED, 0),
        Send(0, (1,)),
    ]
    # The last attempt: no Retry, so the scheduler delivers the task's own exception.
    assert policy.task_done(0, 1, retryable=True) == [Send(0, (2,))]
    assert policy.task_done(0, 2) == []


def test_retryable_exception_without_retries_is_delivered() -> None:
    policy, _ = started(1)
    policy.submit([task(1)])
    assert policy.task_done(0, 1, retryable=True) == []
    assert policy.pending_count == 0


def test_retryable_exception_with_tasks_queued_requeues_only_that_task() -> None:
    policy, _ = started(1, ahead=AHEAD_SECONDS)
    assert policy.submit(tasks(*range(8), retries=1)) == [Send(0, (0, 1))]
    # Task 0 goes back first in line, and so is the one topping the worker up.
    assert policy.task_done(0, 0, retryable=True) == [
        Retry(0, FailReason.RAISED, 0),
        Send(0, (0,)),
    ]
    assert policy.in_flight(0) == (1, 0)
    assert policy.pending_count == 6


def test_attempts_count_across_reasons() -> None:
    policy, clock = started(1)
    policy.submit([task(1, retries=2, timeout=5.0)])
    assert policy.worker_exited(0) == [Retry(1, FailReason.WORKER_LOST, 0), Spawn(1)]
    assert policy.worker_ready(1) == [Send(1, (1,))]
    clock.advance(5.0)
    assert policy.expire() == [Kill(1), Retry(1, FailReason.TIMED_OUT, 1), Spawn(2)]
    assert policy.worker_exited(1) == []
    assert policy.worker_ready(2) == [Send(2, (1,))]
    assert policy.task_done(2, 1, retryable=True) == []  # the third attempt was the last


def test_attempts_are_forgotten_when_a_task_completes() -> None:
    policy, _ = started(1)
    policy.submit([task(1, retries=1)])
    assert of(policy.worker_exited(0), Retry) == [Retry(1, FailReason.WORKER_LOST, 0)]
    assert policy.worker_ready(1) == [Send(1, (1,))]
    assert policy.task_done(1, 1) == []
    # The same id again (the policy keys by id): a fresh count, so a retry again.
    assert policy.submit([task(1, retries=1)]) == [Send(1, (1,))]
    assert of(policy.worker_exited(1), Retry) == [Retry(1, FailReason.WORKER_LOST, 1)]


def test_attempts_are_forgotten_when_a_task_fails() -> None:
    policy, _ = started(1)
    policy.submit([task(1, retries=1)])
    policy.worker_exited(0)
    policy.worker_ready(1)
    assert failed_ids(policy.worker_exited(1), FailReason.WORKER_LOST) == {1}
    policy.worker_ready(2)
    assert policy.submit([task(1, retries=1)]) == [Send(2, (1,))]
    assert of(policy.worker_exited(2), Retry) == [Retry(1, FailReason.WORKER_LOST, 2)]


def test_attempts_are_forgotten_when_a_retryable_exception_is_delivered() -> None:
    policy, _ = started(1)
    policy.submit([task(1, retries=1)])
    policy.task_done(0, 1, retryable=True)  # Retry, and sent again
    assert policy.task_done(0, 1, retryable=True) == []  # delivered
    policy.submit([task(1, retries=1)])
    assert of(policy.task_done(0, 1, retryable=True), Retry) == [Retry(1, FailReason.RAISED, 0)]


def test_attempts_are_forgotten_when_a_retried_task_is_cancelled() -> None:
    policy, _ = started(1)
    policy.submit([task(1, retries=1)])
    policy.worker_exited(0)  # Retry: 1 waits in the queue
    assert policy.cancel([1]) == [Fail((1,), FailReason.CANCELLED)]
    policy.worker_ready(1)
    assert policy.submit([task(1, retries=1)]) == [Send(1, (1,))]
    assert of(policy.worker_exited(1), Retry) == [Retry(1, FailReason.WORKER_LOST, 1)]


def test_retries_continue_after_close() -> None:
    policy, _ = started(1)
    policy.submit([task(1, retries=1)])
    assert policy.close() == []
    assert policy.worker_exited(0) == [Retry(1, FailReason.WORKER_LOST, 0), Spawn(1)]
    assert policy.worker_ready(1) == [Send(1, (1,))]
    assert policy.task_done(1, 1) == [Stop(1)]
    policy.worker_exited(1)
    assert policy.finished


# -- no retries once the pool is broken or terminated ------------------------------------------


def test_no_retry_after_worker_loss_once_broken() -> None:
    policy = Policy(2, clock=FakeClock())
    policy.start()
    policy.worker_ready(0)
    assert policy.submit([task(1, retries=3)]) == [Send(0, (1,))]
    assert policy.break_pool() == [Kill(1)]
    assert policy.worker_exited(0) == [Fail((1,), FailReason.WORKER_LOST, 0)]
    assert policy.worker_exited(1) == []
    assert policy.finished


def test_no_retry_after_retryable_exception_once_broken() -> None:
    policy = Policy(2, clock=FakeClock())
    policy.start()
    policy.worker_ready(0)
    policy.submit([task(1, retries=3)])
    policy.break_pool()
    # No Retry: the task's own exception is delivered; the worker is then stopped.
    assert policy.task_done(0, 1, retryable=True) == [Stop(0)]


def test_no_retry_after_timeout_once_broken() -> None:
    clock = FakeClock()
    policy = Policy(2, clock=clock)
    policy.start()
    policy.worker_ready(0)
    policy.submit([task(1, retries=3, timeout=1.0)])
    policy.break_pool()
    clock.advance(1.0)
    assert policy.expire() == [Kill(0), Fail((1,), FailReason.TIMED_OUT, 0)]


def test_no_retry_once_terminated() -> None:
    policy, clock = started(2)
    policy.submit([task(1, retries=3), task(2, retries=3, timeout=1.0)])
    actions = policy.terminate()
    assert failed_ids(actions, FailReason.TERMINATED) == {1, 2}
    assert not of(actions, Retry)
    clock.advance(2.0)
    assert policy.expire() == []
    assert policy.task_done(0, 1, retryable=True) == []
    assert policy.worker_exited(0) == []
    assert policy.worker_exited(1) == []
    assert policy.finished


# -- cancellation -------------------------------------------------------------------------------


def test_cancel_unknown_ids_returns_nothing() -> None:
    policy, _ = started(1)
    assert policy.cancel([]) == []
    assert policy.cancel([42]) == []
    policy.submit([task(1)])
    policy.task_done(0, 1)
    assert policy.cancel([1]) == []  # already finished


def test_cancel_pending_task_drops_it() -> None:
    policy, _ = started(1)
    assert policy.submit(tasks(1, 2, 3)) == [Send(0, (1,))]
    assert policy.cancel([2, 99]) == [Fail((2,), FailReason.CANCELLED)]
    assert policy.pending_count == 1
    assert policy.task_done(0, 1) == [Send(0, (3,))]


def test_cancel_last_task_after_close_winds_down() -> None:
    policy, _ = started(2)
    policy.submit(tasks(1, 2, 3))
    policy.close()
    assert policy.task_done(1, 2) == [Send(1, (3,))]
    assert policy.cancel([3]) == [Fail((3,), FailReason.CANCELLED), Kill(1)]
    assert policy.task_done(0, 1) == [Stop(0)]
    policy.worker_exited(0)
    assert not policy.finished
    assert policy.worker_exited(1) == []
    assert policy.finished


def test_cancel_running_task_kills_its_worker_and_requeues_the_rest() -> None:
    policy, _ = started(1, ahead=AHEAD_SECONDS)
    assert policy.submit(tasks(*range(8))) == [Send(0, (0, 1))]
    assert policy.cancel([0]) == [Fail((0,), FailReason.CANCELLED), Kill(0), Spawn(1)]
    assert policy.pending_count == 7  # 1 went back, ahead of the others
    assert policy.in_flight(0) == ()
    assert policy.task_done(0, 0) == []  # a late report from the killed worker
    assert policy.worker_exited(0) == []  # nothing more failed, no second replacement
    assert policy.worker_ready(1) == [Send(1, (1, 2))]


def test_cancel_running_and_unstarted_tasks_of_one_worker() -> None:
    policy, _ = started(1, ahead=AHEAD_SECONDS)
    assert policy.submit(tasks(*range(8))) == [Send(0, (0, 1))]
    assert policy.cancel([1, 0]) == [Fail((0, 1), FailReason.CANCELLED), Kill(0), Spawn(1)]
    assert policy.pending_count == 6
    policy.worker_exited(0)
    assert policy.worker_ready(1) == [Send(1, (2, 3))]


def test_cancel_running_timed_task_clears_its_deadline() -> None:
    policy, clock = started(1)
    policy.submit([task(1, timeout=5.0, retries=2)])
    assert policy.cancel([1]) == [Fail((1,), FailReason.CANCELLED), Kill(0), Spawn(1)]
    assert policy.next_deadline() is None
    clock.advance(10.0)
    assert policy.expire() == []
    assert policy.worker_exited(0) == []


def test_cancel_reports_fail_before_other_actions() -> None:
    policy, _ = started(2)
    policy.submit(tasks(1, 2, 3))
    actions = policy.cancel([3, 1, 2])
    assert isinstance(actions[0], Fail)
    assert actions[0].reason is FailReason.CANCELLED
    assert set(actions[0].task_ids) == {1, 2, 3}
    assert len(of(actions, Fail)) == 1
    assert set(of(actions, Kill)) == {Kill(0), Kill(1)}
    assert len(of(actions, Spawn)) == 2


def queued_behind() -> Policy:
    """One worker running task 0, with task 1 queued behind it and task 2 pending."""
    policy, _ = started(1, ahead=AHEAD_SECONDS)  # nothing measured: two tasks in flight
    batch = [task(0), task(1, retries=3), task(2)]
    assert policy.submit(batch) == [Send(0, (0, 1))]
    assert policy.pending_count == 1
    return policy


def test_cancel_queued_task_fails_it_recalls_it_and_keeps_the_worker() -> None:
    policy = queued_behind()
    assert policy.cancel([1]) == [Fail((1,), FailReason.CANCELLED), Recall(0, (1,))]
    assert policy.in_flight(0) == (0, 1)  # until the worker answers
    # The worker gives it back unstarted: dropped, neither queued again nor failed again.
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
    # Its report is ignored: no Retry although it may retry, nothing delivered twice.
    assert policy.task_done(0, 1, retryable=True) == []
    assert policy.in_flight(0) == (2,)
    assert policy.pending_count == 0
    assert policy.task_done(0, 2) == []


def test_cancelled_queued_task_is_not_failed_again_nor_requeued_on_death() -> None:
    policy = queued_behind()
    policy.cancel([1])
    assert policy.worker_exited(0) == [Fail((0,), FailReason.WORKER_LOST, 0), Spawn(1)]
    assert policy.pending_count == 1
    assert policy.worker_ready(1) == [Send(1, (2,))]


def test_cancelled_queued_task_running_when_its_worker_dies() -> None:
    policy = queued_behind()
    policy.cancel([1])
    policy.task_done(0, 0)  # 1 now runs (the recall came too late); 2 is queued behind it
    assert policy.in_flight(0) == (1, 2)
    # Neither Fail nor Retry for 1 (retries=3); 2 had not started and goes back.
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
    is killed and its unstarted tasks go back to the queue, but not 1: it was failed CANCELLED
    already. Re-queued, it would run again and, in the scheduler (which dropped it from its
    table when it failed it), its Send would raise KeyError."""
    policy = queued_behind()
    assert policy.cancel([1]) == [Fail((1,), FailReason.CANCELLED), Recall(0, (1,))]
    assert policy.cancel([0]) == [Fail((0,), FailReason.CANCELLED), Kill(0), Spawn(1)]
    assert policy.pending_count == 1
    assert policy.worker_ready(1) == [Send(1, (2,))]


def test_cancel_of_an_already_cancelled_task_fails_nothing() -> None:
    """A cancelled task that a worker still holds is not 'known' any more: cancelling it again
    must not fail it a second time, nor recall it again (the scheduler only cancels live tasks,
    so this is the policy's own contract rather than a path the scheduler takes today)."""
    policy = queued_behind()
    policy.cancel([1])
    assert policy.cancel([1]) == []
    policy.task_done(0, 0)  # now 1 runs
    assert policy.cancel([1]) == []


def test_terminate_does_not_fail_an_already_cancelled_task_again() -> None:
    policy = queued_behind()
    policy.cancel([1])
    actions = policy.terminate()
    assert failed_ids(actions, FailReason.TERMINATED) == {0, 2}


def test_cancel_after_break_fails_the_killed_workers_unstarted_tasks() -> None:
    """The pool broke while its worker ran 0 with 1 queued behind; then 0 is cancelled. The
    worker is killed and 1, never started, goes back to the queue; but no worker will ever take
    it (the pool is broken). Like the unstarted tasks of a worker that dies after the break
    (test_policy.py's test_death_after_break_fails_unstarted_tasks) it must fail BROKEN, not
    wait in the queue of a policy that says it has finished: the scheduler would then exit and
    leave it unresolved."""
    policy = queued_behind()
    assert failed_ids(policy.break_pool(), FailReason.BROKEN) == {2}
    actions = policy.cancel([0])
    assert failed_ids(actions, FailReason.CANCELLED) == {0}
    assert Kill(0) in actions
    actions += policy.worker_exited(0)
    assert failed_ids(actions, FailReason.BROKEN) == {1}
    assert policy.pending_count == 0
    assert policy.finished


def test_tasks_given_back_after_break_by_a_retiring_worker_fail_broken() -> None:
    """A recall's answer comes after the pool broke, from a worker that went over the memory
    cap: it is stopped once idle and none replaces it, so the tasks it gave back can never run.
    They must fail BROKEN rather than strand in the queue of a finished policy."""
    policy, _ = started(2, ahead=AHEAD_SECONDS, max_memory=1000)
    assert policy.submit(tasks(0, 1)) == [Send(0, (0,)), Send(1, (1,))]
    assert policy.submit(tasks(2, 3)) == [Send(0, (2,)), Send(1, (3,))]
    assert policy.task_done(0, 0) == []
    assert policy.task_done(0, 2) == [Recall(1, (3,))]
    assert policy.break_pool() == [Stop(0)]
    assert policy.task_done(1, 1, resident=5000) == []
    actions = policy.tasks_recalled(1, [3])
    assert Stop(1) in actions
    actions += policy.worker_exited(0) + policy.worker_exited(1)
    assert failed_ids(actions, FailReason.BROKEN) == {3}
    assert policy.pending_count == 0
    assert policy.finished


# -- the memory cap -----------------------------------------------------------------------------


def test_worker_over_the_memory_cap_is_replaced() -> None:
    policy, _ = started(1, max_memory=1000)
    assert policy.submit(tasks(1, 2)) == [Send(0, (1,))]
    assert policy.task_done(0, 1, resident=1001) == [Stop(0), Spawn(1)]
    assert policy.pending_count == 1  # task 2 waits for the replacement
    assert policy.worker_ready(1) == [Send(1, (2,))]
    assert policy.worker_exited(0) == []
    assert policy.worker_ids() == [1]


@pytest.mark.parametrize("resident", [0, 1, 1000])
def test_worker_at_or_under_the_cap_or_unmeasured_is_kept(resident: int) -> None:
    policy, _ = started(1, max_memory=1000)
    policy.submit(tasks(1, 2))
    assert policy.task_done(0, 1, resident=resident) == [Send(0, (2,))]
    assert policy.task_done(0, 2, resident=resident) == []
    assert policy.worker_ids() == [0]


def test_no_memory_cap_keeps_any_worker() -> None:
    policy, _ = started(1)
    policy.submit(tasks(1, 2))
    assert policy.task_done(0, 1, resident=10**12) == [Send(0, (2,))]


def test_retiring_worker_finishes_its_queued_tasks_first() -> None:
    policy, _ = started(1, ahead=AHEAD_SECONDS, max_memory=1000)
    assert policy.submit(tasks(*range(8))) == [Send(0, (0, 1))]
    # Over the cap: it is let finish what it holds, and sent nothing more.
    assert policy.task_done(0, 0, resident=5000) == []
    assert policy.in_flight(0) == (1,)
    assert policy.task_done(0, 1, resident=10) == [Stop(0), Spawn(1)]  # the mark sticks
    assert policy.worker_ready(1) == [Send(1, (2, 3))]


def test_retiring_worker_is_not_topped_up() -> None:
    """Once over the cap a worker is only let finish what it holds: topping it up would keep it
    busy, and over the cap, for as long as work keeps coming."""
    policy, _ = started(1, ahead=1.0, measured=0.25, max_memory=1000)  # 5 in flight
    assert policy.submit(tasks(*range(20))) == [Send(0, (0, 1, 2, 3, 4))]
    assert policy.task_done(0, 0, resident=5000) == []
    for i in (1, 2, 3):  # down to one held: a worker under the cap would be topped up
        assert policy.task_done(0, i) == []
    assert policy.task_done(0, 4) == [Stop(0), Spawn(1)]
    assert policy.worker_ready(1) == [Send(1, (5, 6, 7, 8, 9))]


def test_retiring_worker_with_a_retry() -> None:
    policy, _ = started(1, max_memory=1000)
    policy.submit([task(1, retries=1)])
    assert policy.task_done(0, 1, retryable=True, resident=2000) == [
        Retry(1, FailReason.RAISED, 0),
        Stop(0),
        Spawn(1),
    ]
    assert policy.worker_ready(1) == [Send(1, (1,))]


def test_retiring_worker_after_close_is_not_replaced_without_work() -> None:
    policy, _ = started(2, max_memory=1000)
    policy.submit(tasks(1))
    assert policy.close() == [Stop(1)]
    assert policy.task_done(0, 1, resident=2000) == [Stop(0)]
    policy.worker_exited(0)
    policy.worker_exited(1)
    assert policy.finished


# -- failed sends -------------------------------------------------------------------------------


def test_send_failed_requeues_the_batch_at_the_head() -> None:
    policy, _ = started(2)
    assert policy.submit(tasks(1, 2, 3)) == [Send(0, (1,)), Send(1, (2,))]
    assert policy.send_failed(0, (1,)) == [Spawn(2)]
    assert policy.in_flight(0) == ()
    assert policy.pending_count == 2
    assert policy.task_done(1, 2) == [Send(1, (1,))]  # 1 ahead of 3
    assert policy.worker_ready(2) == [Send(2, (3,))]
    assert policy.worker_exited(0) == []  # it never had the batch: nothing fails


def test_send_failed_worker_is_sent_nothing_more() -> None:
    policy, _ = started(1, ahead=AHEAD_SECONDS)
    assert policy.submit(tasks(0, 1, 2)) == [Send(0, (0, 1))]
    assert policy.task_done(0, 0) == [Send(0, (2,))]  # topped up: this Send fails
    assert policy.send_failed(0, (2,)) == [Spawn(1)]
    assert policy.in_flight(0) == (1,)  # the tasks it did receive are still its own
    assert policy.submit(tasks(3)) == []
    assert policy.task_done(0, 1) == []  # not idle again, not stopped: its exit is coming
    assert policy.worker_ready(1) == [Send(1, (2, 3))]
    assert policy.worker_exited(0) == []


def test_send_failed_counts_no_attempt_and_clears_the_deadline() -> None:
    policy, clock = started(1)
    policy.submit([task(1, timeout=5.0)])
    assert policy.next_deadline() == clock.now + 5.0
    assert policy.send_failed(0, (1,)) == [Spawn(1)]
    assert policy.next_deadline() is None
    clock.advance(10.0)
    assert policy.expire() == []
    assert policy.worker_exited(0) == []
    assert policy.worker_ready(1) == [Send(1, (1,))]  # not failed although it has no retries


def test_send_failed_once_broken_fails_the_batch() -> None:
    policy = Policy(2, clock=FakeClock())
    policy.start()
    policy.worker_ready(0)
    policy.submit(tasks(1))
    policy.break_pool()
    assert policy.send_failed(0, (1,)) == [Fail((1,), FailReason.BROKEN)]
    policy.worker_exited(0)
    policy.worker_exited(1)
    assert policy.finished


# -- a seeded random run: every task ends exactly once ------------------------------------------


@dataclass
class SimWorker:
    state: str = "starting"  # starting, up, stopping (told to stop), killed
    queue: list[int] = field(default_factory=list)  # sent and not yet reported, in run order
    recalls: list[tuple[int, ...]] = field(default_factory=list)  # asked back, not answered
    over_cap: bool = False  # it reported more memory than the cap: it must get nothing more


class World:
    """Plays the scheduler and the workers around a policy, checking what it asks for.

    A task ends when the policy fails it, or when a worker reports it while the policy still
    has it in flight there and answers with no Retry for it (what a scheduler delivers); a
    report for a task that already ended is dropped, as the scheduler drops it.
    """

    def __init__(self, seed: int) -> None:
        self.rng = rng = random.Random(seed)
        self.clock = FakeClock()
        self.policy = Policy(
            rng.randint(1, 3),
            rng.choice([None, None, 3]),
            clock=self.clock,
            ahead_seconds=rng.choice([0.0, AHEAD_SECONDS]),
            max_memory=rng.choice([None, 1000]),
        )
        self.workers: dict[int, SimWorker] = {}
        self.tasks: dict[int, TaskInfo] = {}
        self.ended: dict[int, str] = {}
        self.retries: Counter[int] = Counter()
        self.log: list[str] = []
        self.open_sources = 0
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
                for tid in action.task_ids:
                    assert tid in self.tasks, self.trace(f"Fail of unknown task {tid}")
                    assert tid not in self.ended, self.trace(f"task {tid} failed after it ended")
                    self.ended[tid] = action.reason.name
                if action.reason in (FailReason.WORKER_LOST, FailReason.TIMED_OUT):
                    assert action.wid is not None, self.trace()
                    for tid in action.task_ids:
                        self.check_out_of_attempts(tid)
            elif isinstance(action, Retry):
                tid = action.task_id
                assert tid not in self.ended, self.trace(f"Retry of task {tid} after it ended")
                self.retries[tid] += 1
                assert self.retries[tid] <= self.tasks[tid].retries, self.trace(
                    f"task {tid} retried more than it may"
                )
                assert self.policy.state in (Lifecycle.RUN, Lifecycle.CLOSE), self.trace()
            else:  # pragma: no cover
                raise AssertionError(action)

    def send(self, action: Send) -> None:
        worker = self.workers[action.wid]
        for tid in action.task_ids:
            assert tid not in self.ended, self.trace(f"task {tid} sent after it ended")
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

    def check_out_of_attempts(self, tid: int) -> None:
        """A failed attempt ends the task only once it has no retry left (or none may run)."""
        if self.policy.state in (Lifecycle.RUN, Lifecycle.CLOSE):
            assert self.retries[tid] == self.tasks[tid].retries, self.trace(
                f"task {tid} ended after {self.retries[tid]} of {self.tasks[tid].retries} retries"
            )

    def call(self, name: str, *args: object, **kwargs: object) -> list:
        self.log.append(f"{name}{args}{kwargs or ''}")
        actions = getattr(self.policy, name)(*args, **kwargs) or []  # source_opened: None
        self.apply(actions)
        return actions

    def trace(self, message: str = "") -> str:
        return message + "\n" + "\n".join(self.log[-40:])

    # -- events ------------------------------------------------------------------------------

    def submit(self) -> None:
        infos = []
        for _ in range(self.rng.randint(1, 6)):
            tid = len(self.tasks)
            info = TaskInfo(
                tid,
                self.rng.choice([None, None, None, 0.5, 2.0, 4.0]),
                self.rng.choice([0, 10, 40, 200]),
                prefetch=self.rng.random() < 0.8,
                retries=self.rng.choice([0, 0, 1, 2, 3]),
            )
            self.tasks[tid] = info
            infos.append(info)
        self.call("submit", infos)

    def ready(self, wid: int) -> None:
        self.workers[wid].state = "up"
        self.call("worker_ready", wid)

    def report(self, wid: int, retryable: bool) -> None:
        """The worker reports the first task in its queue."""
        tid = self.workers[wid].queue.pop(0)
        in_flight = tid in self.policy.in_flight(wid)
        resident = self.rng.choice([0, 0, 500, 1500])
        elapsed = self.rng.choice([None, 1e-5, 1e-3, 0.05])
        self.log.append(
            f"task_done({wid}, {tid}, retryable={retryable}, resident={resident}, "
            f"elapsed={elapsed})"
        )
        actions = self.policy.task_done(
            wid, tid, retryable=retryable, resident=resident, elapsed=elapsed
        )
        cap = self.policy.max_memory
        if in_flight and cap is not None and resident > cap:
            self.workers[wid].over_cap = True
        retried = any(isinstance(a, Retry) and a.task_id == tid for a in actions)
        if in_flight and not retried:
            if tid in self.ended:
                # Only a cancelled task stays in flight after it ended (it was queued behind).
                assert self.ended[tid] == "CANCELLED", self.trace(f"{tid} reported twice")
            else:
                self.ended[tid] = "done"
                if retryable:
                    self.check_out_of_attempts(tid)
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

    def step(self) -> None:
        rng = self.rng
        by_state: dict[str, list[int]] = {}
        for wid, worker in self.workers.items():
            by_state.setdefault(worker.state, []).append(wid)
        busy = [wid for wid in by_state.get("up", []) if self.workers[wid].queue]
        late = [wid for wid in by_state.get("killed", []) if self.workers[wid].queue]
        recalled = [wid for wid in by_state.get("up", []) if self.workers[wid].recalls]
        leaving = by_state.get("stopping", []) + by_state.get("killed", [])
        live = [tid for tid in self.tasks if tid not in self.ended]
        roll = rng.random()
        if roll < 0.15 and self.policy.state in (Lifecycle.RUN, Lifecycle.BROKEN):
            if rng.random() < self.busy_rate:
                self.submit()  # once broken, the policy fails what comes
        elif roll < 0.30 and by_state.get("starting"):
            self.ready(rng.choice(by_state["starting"]))
        elif roll < 0.55 and busy:
            self.report(rng.choice(busy), retryable=rng.random() < 0.3)
        elif roll < 0.60 and recalled:
            self.answer_recall(rng.choice(recalled))
        elif roll < 0.63 and late:
            self.report(rng.choice(late), retryable=rng.random() < 0.3)
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
            self.clock.advance(rng.uniform(0.0, 3.0))
            self.call("expire")
        elif roll < 0.95 and live:
            # Any live task, or one a worker runs, or one that waits behind the running one.
            queues = [w.queue for w in self.workers.values() if w.state == "up" and w.queue]
            running = [q[0] for q in queues]
            waiting = [t for q in queues for t in q[1:]]
            pool = rng.choice([live, running or live, waiting or live])
            pool = [t for t in pool if t not in self.ended] or live
            self.cancel(rng.sample(pool, min(len(pool), rng.randint(1, 2))))
        elif roll < 0.98:
            # A lazy source (an imap) opens, or one open ends.
            if self.open_sources < 2 and self.policy.state is Lifecycle.RUN:
                self.open_sources += 1
                self.call("source_opened")
            elif self.open_sources:
                self.close_source()
        elif roll < 0.9805:
            self.call("break_pool")  # the initializer raised

    def close_source(self) -> None:
        self.open_sources -= 1
        self.call("source_closed")

    def cancel(self, ids: list[int]) -> None:
        if self.rng.random() < 0.2:
            ids = [*ids, 10**6]  # never submitted
        actions = self.call("cancel", ids)
        cancelled = failed_ids(actions)
        if actions:
            assert isinstance(actions[0], Fail), self.trace()
            assert actions[0].reason is FailReason.CANCELLED, self.trace()
            assert len(of(actions, Fail)) == 1, self.trace()
        # Every live task is pending or held by a worker: cancelling it always fails it.
        assert cancelled == {t for t in ids if t in self.tasks}, self.trace()

    def drain(self) -> None:
        """After close: no more crashes; run everything out until the policy has finished."""
        while self.open_sources:
            if self.policy.state is Lifecycle.CLOSE:
                assert not self.policy.finished, self.trace("finished with a source open")
            self.close_source()
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
            elif busy:
                self.report(self.rng.choice(busy), retryable=self.rng.random() < 0.2)
            elif leaving:
                self.exit(leaving[0])
            else:
                self.clock.advance(10.0)
                if not self.call("expire"):
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
            world.call(ending)
        world.step()
        world.check_consistent()
    if world.policy.state is Lifecycle.RUN:
        world.call(ending)
    world.drain()
    assert world.policy.finished
    assert world.policy.pending_count == 0
    assert world.workers == {}
    assert world.policy.worker_ids() == []
    assert sorted(world.ended) == sorted(world.tasks), world.trace("tasks left unended")
    assert "done" in world.ended.values() or world.policy.state is Lifecycle.BROKEN
