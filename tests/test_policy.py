"""Unit tests of the pure scheduling policy: no processes, no pipes, an injected clock."""

from __future__ import annotations

import pytest

from _clock import FakeClock
from procpool._policy import (
    MAX_STARTUP_FAILURES,
    Fail,
    FailReason,
    Kill,
    Lifecycle,
    Policy,
    Send,
    Spawn,
    Stop,
    TaskInfo,
)


def tasks(*ids: int, timeout: float | None = None) -> list[TaskInfo]:
    return [TaskInfo(i, timeout) for i in ids]


def make(
    processes: int = 2, maxtasks: int | None = None, clock: FakeClock | None = None
) -> tuple[Policy, FakeClock]:
    clock = clock or FakeClock()
    policy = Policy(processes, maxtasks, clock=clock, ahead_seconds=0.0)
    return policy, clock


def started(processes: int = 2, maxtasks: int | None = None) -> tuple[Policy, FakeClock, list[int]]:
    """A policy whose initial workers have all reported ready (with nothing to do)."""
    policy, clock = make(processes, maxtasks)
    wids = [a.wid for a in policy.start()]
    for wid in wids:
        assert policy.worker_ready(wid) == []
    return policy, clock, wids


def of(actions: list, kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def failed_ids(actions: list, reason: FailReason | None = None) -> set[int]:
    return {
        t for a in of(actions, Fail) if reason is None or a.reason is reason for t in a.task_ids
    }


# -- start and dispatch -----------------------------------------------------------------------


def test_start_spawns_full_complement() -> None:
    policy, _ = make(3)
    actions = policy.start()
    assert actions == [Spawn(0), Spawn(1), Spawn(2)]
    assert policy.worker_ids() == [0, 1, 2]
    assert policy.state is Lifecycle.RUN
    assert not policy.finished
    assert policy.next_deadline() is None


def test_no_dispatch_before_ready() -> None:
    policy, _ = make(2)
    policy.start()
    assert policy.submit(tasks(1, 2)) == []
    assert policy.pending_count == 2
    assert policy.worker_ready(1) == [Send(1, (1,))]
    assert policy.pending_count == 1
    assert policy.worker_ready(0) == [Send(0, (2,))]
    assert policy.pending_count == 0


def test_dispatch_to_idle_workers_in_order() -> None:
    policy, _, _ = started(3)
    actions = policy.submit(tasks(10, 11, 12))
    assert actions == [Send(0, (10,)), Send(1, (11,)), Send(2, (12,))]
    assert policy.in_flight(0) == (10,)
    assert policy.in_flight(2) == (12,)


def test_busy_workers_get_no_more_work_until_done() -> None:
    policy, _, _ = started(2)
    policy.submit(tasks(1, 2))
    assert policy.submit(tasks(3)) == []  # both busy
    assert policy.pending_count == 1
    assert policy.task_done(1, 2) == [Send(1, (3,))]
    assert policy.task_done(0, 1) == []  # nothing left to send
    assert policy.pending_count == 0


def test_empty_submit_is_harmless() -> None:
    policy, _, _ = started(2)
    assert policy.submit([]) == []


# -- batching ---------------------------------------------------------------------------------


def test_shallow_queue_sends_single_tasks() -> None:
    policy, _, _ = started(2)
    # 7 pending < 4 * 2 * 2: one task per message.
    actions = policy.submit(tasks(*range(7)))
    assert actions == [Send(0, (0,)), Send(1, (1,))]


def test_batch_grows_with_a_deep_queue() -> None:
    policy, _, _ = started(2)
    # 80 pending with 2 workers: 80 // 8 = 10 for the first, 70 // 8 = 8 for the second.
    actions = policy.submit(tasks(*range(80)))
    assert actions == [Send(0, tuple(range(10))), Send(1, tuple(range(10, 18)))]
    assert policy.pending_count == 80 - 18


def test_batch_is_capped_at_max_batch() -> None:
    policy, _, _ = started(1)
    actions = policy.submit(tasks(*range(10 * MAX_BATCH)))
    assert actions == [Send(0, tuple(range(MAX_BATCH)))]


def test_batch_completes_task_by_task() -> None:
    policy, _, _ = started(1)
    policy.submit(tasks(*range(8)))  # 8 // 4 = 2 per batch
    assert policy.in_flight(0) == (0, 1)
    assert policy.task_done(0, 0) == []  # the batch is still running
    assert policy.in_flight(0) == (1,)
    assert policy.task_done(0, 1) == [Send(0, (2,))]  # 6 // 4 = 1


def test_timed_task_travels_alone_and_sets_deadline() -> None:
    policy, clock, _ = started(1)
    batch = tasks(1, timeout=5.0) + tasks(*range(2, 100))
    assert policy.submit(batch) == [Send(0, (1,))]
    assert policy.next_deadline() == clock.now + 5.0
    clock.advance(1.0)
    # The untimed tasks after it batch normally, and carry no deadline.
    actions = policy.task_done(0, 1)
    assert len(actions) == 1
    assert len(actions[0].task_ids) > 1
    assert policy.next_deadline() is None


def test_batch_stops_before_a_timed_task() -> None:
    policy, clock, _ = started(1)
    batch = tasks(*range(40)) + tasks(40, timeout=2.0) + tasks(*range(41, 60))
    actions = policy.submit(batch)
    assert actions == [Send(0, tuple(range(15)))]  # 60 // 4 = 15
    assert policy.next_deadline() is None
    for i in range(15):
        actions = policy.task_done(0, i)
    assert actions == [Send(0, tuple(range(15, 26)))]  # 45 // 4 = 11
    for i in range(15, 26):
        actions = policy.task_done(0, i)
    assert actions == [Send(0, tuple(range(26, 34)))]  # 34 // 4 = 8
    for i in range(26, 34):
        actions = policy.task_done(0, i)
    assert actions == [Send(0, tuple(range(34, 40)))]  # 26 // 4 = 6 exactly up to the timed one
    clock.advance(3.0)
    for i in range(34, 40):
        actions = policy.task_done(0, i)
    assert actions == [Send(0, (40,))]
    assert policy.next_deadline() == clock.now + 2.0


# -- maxtasksperchild ---------------------------------------------------------------------------


def test_maxtasks_retires_worker_and_spawns_replacement() -> None:
    policy, _, _ = started(1, maxtasks=2)
    policy.submit(tasks(1))
    assert policy.task_done(0, 1) == []  # one of two
    policy.submit(tasks(2, 3))
    actions = policy.task_done(0, 2)
    assert actions == [Stop(0), Spawn(1)]
    assert policy.pending_count == 1  # task 3 waits for the replacement
    assert policy.worker_ready(1) == [Send(1, (3,))]
    assert policy.worker_exited(0) == []  # the retired worker's exit changes nothing
    assert policy.worker_ids() == [1]


def test_maxtasks_caps_batch_at_remaining_quota() -> None:
    policy, _, _ = started(1, maxtasks=5)
    actions = policy.submit(tasks(*range(100)))  # the queue alone would allow 25
    assert actions == [Send(0, tuple(range(5)))]
    for i in range(4):
        assert policy.task_done(0, i) == []
    assert policy.task_done(0, 4) == [Stop(0), Spawn(1)]

    policy2, _, _ = started(1, maxtasks=5)
    policy2.submit(tasks(1, 2, 3))
    policy2.task_done(0, 1)
    policy2.task_done(0, 2)
    policy2.task_done(0, 3)  # 3 of 5 done
    assert policy2.submit(tasks(*range(100, 200))) == [Send(0, (100, 101))]


# -- worker deaths ----------------------------------------------------------------------------


def test_death_fails_running_task_and_requeues_the_rest() -> None:
    """A worker runs its batch in order: only the first unreported task was running. It fails
    with WORKER_LOST; the tasks that never started go back to the head of the queue."""
    policy, _, _ = started(2)
    policy.submit(tasks(*range(40)))  # 40 // 8 = 5, then 35 // 8 = 4
    assert policy.in_flight(1) == (5, 6, 7, 8)
    policy.task_done(1, 5)
    actions = policy.worker_exited(1)
    assert actions == [Fail((6,), FailReason.WORKER_LOST, 1), Spawn(2)]
    assert policy.pending_count == 31 + 2
    assert policy.in_flight(0) == (0, 1, 2, 3, 4)  # nothing else was touched
    # The requeued tasks run first, on the replacement: 33 // 8 = 4.
    assert policy.worker_ready(2) == [Send(2, (7, 8, 9, 10))]


def test_idle_worker_death_fails_nothing_and_is_replaced() -> None:
    policy, _, _ = started(2)
    assert policy.worker_exited(0) == [Spawn(2)]


def test_ready_replacement_picks_up_pending_work() -> None:
    policy, _, _ = started(1)
    policy.submit(tasks(1, 2))
    actions = policy.worker_exited(0)
    assert actions == [Fail((1,), FailReason.WORKER_LOST, 0), Spawn(1)]
    assert policy.worker_ready(1) == [Send(1, (2,))]


def test_startup_failures_break_the_pool() -> None:
    policy, _ = make(1)
    policy.start()
    policy.submit(tasks(1, 2))
    wid = 0
    for _ in range(MAX_STARTUP_FAILURES - 1):
        actions = policy.worker_exited(wid)
        assert actions == [Spawn(wid + 1)]
        wid += 1
    actions = policy.worker_exited(wid)
    assert actions == [Fail((1, 2), FailReason.BROKEN)]
    assert policy.state is Lifecycle.BROKEN
    assert policy.finished
    assert policy.submit(tasks(3)) == [Fail((3,), FailReason.BROKEN)]


def test_break_kills_workers_still_starting_and_stops_idle_ones() -> None:
    policy, _ = make(3)
    policy.start()
    policy.worker_ready(0)
    policy.submit(tasks(1, 2))  # 1 goes to worker 0, 2 waits
    actions = policy.worker_exited(1)  # 1 failure
    assert actions == [Spawn(3)]
    actions = policy.worker_exited(2)  # 2
    assert actions == [Spawn(4)]
    actions = policy.worker_exited(3)  # 3: broken
    assert Fail((2,), FailReason.BROKEN) in actions
    assert Kill(4) in actions
    assert not of(actions, Spawn)
    assert not policy.finished  # worker 0 still runs task 1, worker 4 must still exit
    # The busy worker finishes its task (delivered normally), then is stopped.
    assert policy.task_done(0, 1) == [Stop(0)]
    assert policy.worker_exited(4) == []
    assert not policy.finished
    assert policy.worker_exited(0) == []
    assert policy.finished


def test_ready_between_startup_failures_resets_count() -> None:
    policy, _ = make(1)
    policy.start()
    policy.submit(tasks(1))
    wid = 0
    for _ in range(MAX_STARTUP_FAILURES - 1):
        policy.worker_exited(wid)
        wid += 1
    assert policy.worker_ready(wid) == [Send(wid, (1,))]
    policy.task_done(wid, 1)
    policy.worker_exited(wid)  # died after ready: not a start-up failure
    wid += 1
    for _ in range(MAX_STARTUP_FAILURES - 1):
        actions = policy.worker_exited(wid)
        assert actions == [Spawn(wid + 1)]
        wid += 1
    assert policy.state is Lifecycle.RUN
    policy.worker_exited(wid)
    assert policy.state is Lifecycle.BROKEN


def test_spawn_failed_with_workers_alive_continues() -> None:
    policy, _, _ = started(2)
    policy.submit(tasks(1, 2))
    actions = policy.worker_exited(0)  # loses task 1, wants a replacement
    assert actions == [Fail((1,), FailReason.WORKER_LOST, 0), Spawn(2)]
    assert policy.spawn_failed(2) == []
    assert policy.state is Lifecycle.RUN
    assert policy.worker_ids() == [1]
    policy.submit(tasks(3))
    assert policy.task_done(1, 2) == [Send(1, (3,))]


def test_spawn_failed_with_no_worker_alive_breaks() -> None:
    policy, _, _ = started(1)
    policy.submit(tasks(1, 2))
    actions = policy.worker_exited(0)
    assert actions == [Fail((1,), FailReason.WORKER_LOST, 0), Spawn(1)]
    actions = policy.spawn_failed(1)
    assert actions == [Fail((2,), FailReason.BROKEN)]
    assert policy.state is Lifecycle.BROKEN
    assert policy.finished
    assert policy.submit(tasks(3)) == [Fail((3,), FailReason.BROKEN)]


def test_break_pool_is_idempotent_and_fails_pending() -> None:
    policy, _ = make(2)
    policy.start()
    policy.submit(tasks(1, 2))
    actions = policy.break_pool()
    assert Fail((1, 2), FailReason.BROKEN) in actions
    assert set(of(actions, Kill)) == {Kill(0), Kill(1)}
    assert policy.break_pool() == []


# -- deadlines ------------------------------------------------------------------------------


def test_expire_kills_only_the_worker_past_its_deadline() -> None:
    policy, clock, _ = started(2)
    t0 = clock.now
    policy.submit(tasks(1, timeout=5.0))
    clock.advance(2.0)
    policy.submit(tasks(2, timeout=5.0))
    assert policy.next_deadline() == t0 + 5.0
    clock.advance(2.9)
    assert policy.expire() == []  # t0 + 4.9
    clock.advance(0.1)  # exactly t0 + 5
    actions = policy.expire()
    assert actions == [Kill(0), Fail((1,), FailReason.TIMED_OUT, 0), Spawn(2)]
    assert policy.next_deadline() == t0 + 7.0
    assert policy.in_flight(1) == (2,)
    assert policy.expire() == []  # not twice
    # The killed worker's exit fails nothing more and spawns nothing more.
    assert policy.worker_exited(0) == []
    assert policy.worker_ids() == [1, 2]


def test_late_task_done_for_timed_out_task_is_ignored() -> None:
    policy, clock, _ = started(1)
    policy.submit(tasks(1, timeout=1.0) + tasks(2))
    clock.advance(1.5)
    policy.expire()
    assert policy.task_done(0, 1) == []
    assert policy.pending_count == 1  # task 2 still waits for the replacement
    assert policy.worker_ready(1) == [Send(1, (2,))]


def test_next_deadline_clears_when_task_finishes() -> None:
    policy, clock, _ = started(1)
    policy.submit(tasks(1, timeout=3.0))
    assert policy.next_deadline() == clock.now + 3.0
    policy.task_done(0, 1)
    assert policy.next_deadline() is None
    clock.advance(10)
    assert policy.expire() == []


def test_deadline_starts_when_task_is_sent_not_submitted() -> None:
    policy, clock, _ = started(1)
    policy.submit(tasks(1) + tasks(2, timeout=3.0))
    clock.advance(100.0)
    assert policy.expire() == []
    assert policy.task_done(0, 1) == [Send(0, (2,))]
    assert policy.next_deadline() == clock.now + 3.0


# -- close ------------------------------------------------------------------------------------


def test_close_runs_pending_then_stops_idle_workers() -> None:
    policy, _, _ = started(2)
    policy.submit(tasks(1, 2, 3))
    assert policy.close() == []  # nothing idle
    assert policy.state is Lifecycle.CLOSE
    assert policy.task_done(0, 1) == [Send(0, (3,))]
    assert policy.task_done(1, 2) == [Stop(1)]
    assert policy.task_done(0, 3) == [Stop(0)]
    assert not policy.finished
    assert policy.worker_exited(1) == []
    assert not policy.finished
    assert policy.worker_exited(0) == []
    assert policy.finished


def test_close_with_idle_workers_stops_them_at_once() -> None:
    policy, _, _ = started(2)
    assert policy.close() == [Stop(0), Stop(1)]
    assert not policy.finished
    policy.worker_exited(0)
    policy.worker_exited(1)
    assert policy.finished


def test_close_before_ready_stops_workers_once_ready() -> None:
    policy, _ = make(2)
    policy.start()
    assert policy.close() == []
    assert policy.worker_ready(0) == [Stop(0)]
    assert policy.worker_ready(1) == [Stop(1)]


def test_close_respawns_while_work_is_pending() -> None:
    policy, _, _ = started(1, maxtasks=1)
    policy.submit(tasks(1, 2))
    policy.close()
    # Retired by maxtasksperchild after close: task 2 still needs a worker.
    assert policy.task_done(0, 1) == [Stop(0), Spawn(1)]
    assert policy.worker_exited(0) == []
    assert policy.worker_ready(1) == [Send(1, (2,))]
    assert policy.task_done(1, 2) == [Stop(1)]  # retired; nothing left: no replacement
    assert not policy.finished
    assert policy.worker_exited(1) == []
    assert policy.finished


def test_close_death_with_pending_work_respawns() -> None:
    policy, _, _ = started(1)
    policy.submit(tasks(1, 2))
    policy.close()
    actions = policy.worker_exited(0)
    assert actions == [Fail((1,), FailReason.WORKER_LOST, 0), Spawn(1)]
    assert policy.worker_ready(1) == [Send(1, (2,))]


def test_close_death_without_pending_work_does_not_respawn() -> None:
    policy, _, _ = started(2)
    policy.submit(tasks(1))
    assert policy.close() == [Stop(1)]
    assert policy.worker_exited(0) == [Fail((1,), FailReason.WORKER_LOST, 0)]
    assert not policy.finished
    policy.worker_exited(1)
    assert policy.finished


def test_open_source_keeps_workers_alive_after_close() -> None:
    policy, _, _ = started(2)
    policy.source_opened()
    assert policy.close() == []  # the source may still submit
    assert policy.submit(tasks(1)) == [Send(0, (1,))]
    assert policy.task_done(0, 1) == []
    assert not policy.finished
    # An idle worker that dies is replaced while the source is open.
    assert policy.worker_exited(1) == [Spawn(2)]
    policy.worker_ready(2)
    assert policy.source_closed() == [Stop(0), Stop(2)]
    policy.worker_exited(0)
    assert not policy.finished
    policy.worker_exited(2)
    assert policy.finished


def test_source_closing_while_busy_stops_workers_as_they_finish() -> None:
    policy, _, _ = started(2)
    policy.source_opened()
    policy.close()
    policy.submit(tasks(1))
    assert policy.source_closed() == [Stop(1)]
    assert policy.task_done(0, 1) == [Stop(0)]


# -- terminate --------------------------------------------------------------------------------


def test_terminate_fails_everything_and_kills_every_worker() -> None:
    policy, _, _ = started(2)
    policy.submit(tasks(*range(20)))  # 20 // 8 = 2, then 18 // 8 = 2
    actions = policy.terminate()
    assert policy.state is Lifecycle.TERMINATE
    assert failed_ids(actions, FailReason.TERMINATED) == set(range(20))
    assert failed_ids(actions) == set(range(20))
    assert set(of(actions, Kill)) == {Kill(0), Kill(1)}
    assert not of(actions, Spawn)
    assert policy.pending_count == 0
    assert policy.next_deadline() is None
    assert not policy.finished
    assert policy.worker_exited(0) == []  # nothing more failed, nobody respawned
    assert not policy.finished
    assert policy.worker_exited(1) == []
    assert policy.finished
    assert policy.submit(tasks(99)) == [Fail((99,), FailReason.TERMINATED)]
    assert policy.terminate() == []


def test_terminate_kills_starting_and_leaving_workers() -> None:
    policy, _, _ = started(2, maxtasks=1)
    policy.submit(tasks(1))
    assert policy.task_done(0, 1) == [Stop(0), Spawn(2)]
    actions = policy.terminate()
    assert set(of(actions, Kill)) == {Kill(0), Kill(1), Kill(2)}
    # A worker that dies while starting after terminate is no start-up failure.
    assert policy.worker_exited(2) == []
    assert policy.state is Lifecycle.TERMINATE


def test_terminate_clears_deadlines_and_ignores_late_results() -> None:
    policy, clock, _ = started(1)
    policy.submit(tasks(1, timeout=1.0))
    actions = policy.terminate()
    assert actions == [Fail((1,), FailReason.TERMINATED), Kill(0)]
    clock.advance(5)
    assert policy.expire() == []
    assert policy.task_done(0, 1) == []


def test_terminate_after_close() -> None:
    policy, _, _ = started(1)
    policy.submit(tasks(1, 2))
    policy.close()
    actions = policy.terminate()
    assert failed_ids(actions, FailReason.TERMINATED) == {1, 2}
    assert policy.close() == []
    assert policy.state is Lifecycle.TERMINATE


# -- repopulate -------------------------------------------------------------------------------


def test_repopulate_fills_up_after_failed_spawn() -> None:
    policy, _, _ = started(2)
    policy.worker_exited(0)
    policy.spawn_failed(2)
    assert policy.worker_ids() == [1]
    assert policy.repopulate() == [Spawn(3)]
    assert policy.repopulate() == []


@pytest.mark.parametrize("prefetch", [0, 100])
@pytest.mark.parametrize("processes", [1, 4])
def test_every_submitted_task_ends_exactly_once(processes: int, prefetch: int) -> None:
    """A longer run mixing completions, deaths, retirements and prefetching: every task ends
    exactly once (completed or failed), none is lost or run twice."""
    policy = Policy(processes, 3, clock=FakeClock(), prefetch_bytes=prefetch)
    outstanding: dict[int, int] = {}  # task -> worker
    ended: list[int] = []

    def apply(actions: list) -> None:
        for action in actions:
            if isinstance(action, Send):
                for t in action.task_ids:
                    outstanding[t] = action.wid
            elif isinstance(action, Fail):
                for t in action.task_ids:
                    outstanding.pop(t, None)
                    ended.append(t)
            elif isinstance(action, Spawn):
                apply(policy.worker_ready(action.wid))
            elif isinstance(action, Stop):
                apply(policy.worker_exited(action.wid))

    apply(policy.start())
    apply(policy.submit([TaskInfo(i, None, 30) for i in range(200)]))
    step = 0
    while outstanding:
        step += 1
        task, wid = next(iter(outstanding.items()))  # the earliest sent: workers run in order
        if step % 17 == 0:
            # It dies: what it held is failed or comes back by a later Send.
            for t in [t for t, w in outstanding.items() if w == wid]:
                del outstanding[t]
            apply(policy.worker_exited(wid))
        else:
            del outstanding[task]
            ended.append(task)
            apply(policy.task_done(wid, task))
    assert sorted(ended) == list(range(200))
    assert policy.pending_count == 0
    apply(policy.close())
    assert policy.finished


# -- prefetching ------------------------------------------------------------------------------


def sized(*ids: int, size: int = 10, timeout: float | None = None) -> list[TaskInfo]:
    return [TaskInfo(i, timeout, size) for i in ids]


def prefetching(processes: int = 1, maxtasks: int | None = None, prefetch: int = 100) -> Policy:
    policy = Policy(processes, maxtasks, clock=FakeClock(), prefetch_bytes=prefetch)
    for action in policy.start():
        policy.worker_ready(action.wid)
    return policy


def test_busy_worker_gets_one_small_batch_ahead() -> None:
    policy = prefetching()
    assert policy.submit(sized(0, 1, 2)) == [Send(0, (0,)), Send(0, (1,))]
    assert policy.in_flight(0) == (0, 1)
    assert policy.submit(sized(3)) == []  # at most one batch ahead
    # The running batch ends: the worker goes on with the prefetched one, and gets the next.
    assert policy.task_done(0, 0) == [Send(0, (2,))]
    assert policy.in_flight(0) == (1, 2)


def test_idle_workers_are_served_before_prefetching() -> None:
    policy = prefetching(2)
    assert policy.submit(sized(0, 1, 2, 3)) == [
        Send(0, (0,)),
        Send(1, (1,)),
        Send(0, (2,)),
        Send(1, (3,)),
    ]


def test_no_prefetch_when_disabled() -> None:
    policy = prefetching(prefetch=0)
    assert policy.submit(sized(0, 1, 2)) == [Send(0, (0,))]


def test_prefetch_respects_byte_budget() -> None:
    policy = prefetching(prefetch=100)
    # A deep queue allows big batches, but the prefetched one stops at 100 bytes.
    actions = policy.submit(sized(*range(200), size=30))
    assert actions == [Send(0, tuple(range(50))), Send(0, (50, 51, 52))]


def test_no_prefetch_of_a_task_bigger_than_the_budget() -> None:
    policy = prefetching(prefetch=100)
    assert policy.submit(sized(0) + sized(1, size=101)) == [Send(0, (0,))]


def test_no_prefetch_of_a_timed_task_nor_behind_one() -> None:
    policy = prefetching()
    assert policy.submit(sized(0) + sized(1, timeout=5.0)) == [Send(0, (0,))]
    assert policy.task_done(0, 0) == [Send(0, (1,))]
    # The timed task runs alone: nothing is prefetched behind it, its deadline stays its own.
    assert policy.submit(sized(2)) == []
    assert policy.in_flight(0) == (1,)


def test_prefetched_batch_stops_before_a_timed_task() -> None:
    policy = prefetching(prefetch=1000)
    batch = sized(*range(40)) + sized(40, timeout=1.0)
    actions = policy.submit(batch)
    assert actions == [Send(0, tuple(range(10))), Send(0, tuple(range(10, 17)))]
    assert policy.next_deadline() is None


def test_prefetch_respects_maxtasks_quota() -> None:
    policy = prefetching(maxtasks=2)
    assert policy.submit(sized(0, 1, 2, 3)) == [Send(0, (0,)), Send(0, (1,))]
    assert policy.task_done(0, 0) == []  # 1 done + 1 assigned = the quota: nothing more
    assert policy.task_done(0, 1) == [Stop(0), Spawn(1)]


def test_death_requeues_prefetched_batch() -> None:
    policy = prefetching(2)
    policy.submit(sized(0, 1, 2, 3))  # 0 + 2 on worker 0, 1 + 3 on worker 1
    actions = policy.worker_exited(0)
    assert actions == [Fail((0,), FailReason.WORKER_LOST, 0), Spawn(2)]
    assert policy.pending_count == 1
    assert policy.worker_ready(2) == [Send(2, (2,))]


def test_terminate_fails_prefetched_tasks_too() -> None:
    policy = prefetching(2)
    policy.submit(sized(*range(6)))
    actions = policy.terminate()
    assert failed_ids(actions, FailReason.TERMINATED) == set(range(6))
    assert policy.pending_count == 0


def test_death_after_break_fails_unstarted_tasks() -> None:
    """The pool broke while a busy worker held a prefetched batch; then that worker died.

    Its running task fails with WORKER_LOST. The tasks it had not started can never run (the
    pool is broken, no worker will come): they must fail with BROKEN, not sit in the queue of a
    policy that says it has finished (the scheduler would then exit and leave them unresolved).
    """
    policy = Policy(1, clock=FakeClock(), prefetch_bytes=1000)
    policy.start()
    policy.worker_ready(0)
    assert policy.submit(sized(0, 1, 2)) == [Send(0, (0,)), Send(0, (1,))]
    assert failed_ids(policy.break_pool(), FailReason.BROKEN) == {2}
    assert policy.in_flight(0) == (0, 1)
    actions = policy.worker_exited(0)
    assert Fail((0,), FailReason.WORKER_LOST, 0) in actions
    assert failed_ids(actions, FailReason.BROKEN) == {1}
    assert policy.pending_count == 0
    assert policy.finished
