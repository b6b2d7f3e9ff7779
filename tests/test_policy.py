"""Unit tests of the pure scheduling policy: no processes, no pipes, no clock. (What becomes of
a task, its attempts and deadline, is the task core's: ``test_tasks.py``.)"""

from __future__ import annotations

import pytest

from procpool._policy import (
    AHEAD_SECONDS,
    MAX_IN_FLIGHT,
    MAX_IN_FLIGHT_BYTES,
    MAX_STARTUP_FAILURES,
    RECALL_MIN_SECONDS,
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


def tasks(*ids: int, timeout: float | None = None) -> list[TaskInfo]:
    return [TaskInfo(i, timeout) for i in ids]


def lost(
    task_id: int,
    wid: int,
    reason: FailReason = FailReason.WORKER_LOST,
    *,
    timeout: float | None = None,
) -> Lost:
    """The report of an attempt at task ``task_id`` (as ``tasks`` makes it) lost on ``wid``."""
    return Lost(TaskInfo(task_id, timeout), reason, wid)


def sized(*ids: int, size: int = 10) -> list[TaskInfo]:
    return [TaskInfo(i, None, size) for i in ids]


def applied(*ids: int) -> list[TaskInfo]:
    """apply_async tasks: never queued behind another task."""
    return [TaskInfo(i, prefetch=False) for i in ids]


def make(processes: int = 2, maxtasks: int | None = None) -> Policy:
    """A policy without flow control: each worker holds one task at a time."""
    return Policy(processes, maxtasks, ahead_seconds=0.0)


def started(processes: int = 2, maxtasks: int | None = None) -> Policy:
    """A policy whose initial workers have all reported ready (with nothing to do)."""
    policy = make(processes, maxtasks)
    for action in policy.start():
        assert policy.worker_ready(action.wid) == []
    return policy


def flowing(
    processes: int = 1,
    *,
    ahead: float = 1.0,
    measured: float | None = None,
    maxtasks: int | None = None,
) -> Policy:
    """A policy with flow control (``ahead`` seconds of work queued behind a running task), its
    workers ready and idle. ``measured``: worker 0 first ran a task (id -1) that took this many
    seconds, so a worker may hold 1 + ahead / measured tasks (ahead=1.0 and powers of two keep
    that exact). That task counts towards worker 0's maxtasksperchild."""
    policy = Policy(processes, maxtasks, ahead_seconds=ahead)
    for action in policy.start():
        assert policy.worker_ready(action.wid) == []
    if measured is not None:
        assert policy.submit(tasks(-1)) == [Send(0, (-1,))]
        assert policy.task_done(0, -1, elapsed=measured) == []
    return policy


def of(actions: list, kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def failed_ids(actions: list) -> set[int]:
    """The tasks that no worker will run (the pool broke)."""
    return {t for a in of(actions, Fail) for t in a.task_ids}


# -- start and dispatch -----------------------------------------------------------------------


def test_start_spawns_full_complement() -> None:
    policy = make(3)
    actions = policy.start()
    assert actions == [Spawn(0), Spawn(1), Spawn(2)]
    assert policy.worker_ids() == [0, 1, 2]
    assert policy.state is Lifecycle.RUN
    assert not policy.finished


def test_no_dispatch_before_ready() -> None:
    policy = make(2)
    policy.start()
    assert policy.submit(tasks(1, 2)) == []
    assert policy.pending_count == 2
    assert policy.worker_ready(1) == [Send(1, (1,))]
    assert policy.pending_count == 1
    assert policy.worker_ready(0) == [Send(0, (2,))]
    assert policy.pending_count == 0


def test_dispatch_to_idle_workers_in_order() -> None:
    policy = started(3)
    actions = policy.submit(tasks(10, 11, 12))
    assert actions == [Send(0, (10,)), Send(1, (11,)), Send(2, (12,))]
    assert policy.in_flight(0) == (10,)
    assert policy.in_flight(2) == (12,)


def test_busy_workers_get_no_more_work_until_done() -> None:
    policy = started(2)
    policy.submit(tasks(1, 2))
    assert policy.submit(tasks(3)) == []  # both busy
    assert policy.pending_count == 1
    assert policy.task_done(1, 2) == [Send(1, (3,))]
    assert policy.task_done(0, 1) == []  # nothing left to send
    assert policy.pending_count == 0


def test_empty_submit_is_harmless() -> None:
    policy = started(2)
    assert policy.submit([]) == []


# -- flow control: how many tasks a worker holds ------------------------------------------------


def test_limit_before_any_measurement_is_two() -> None:
    """Nothing measured yet: one task queued behind the running one, no more."""
    policy = flowing(ahead=AHEAD_SECONDS)
    assert policy.submit(tasks(*range(10))) == [Send(0, (0, 1))]
    assert policy.task_seconds is None
    # Down to one task (half the limit): topped up by one.
    assert policy.task_done(0, 0) == [Send(0, (2,))]
    assert policy.in_flight(0) == (1, 2)
    assert policy.task_seconds is None  # a report without a duration is no sample


def test_ahead_zero_holds_one_task_at_a_time() -> None:
    policy = flowing(ahead=0.0, measured=1e-6)  # however tiny the tasks
    assert policy.submit(tasks(*range(10))) == [Send(0, (0,))]
    assert policy.task_done(0, 0, elapsed=1e-6) == [Send(0, (1,))]
    assert policy.in_flight(0) == (1,)


@pytest.mark.parametrize(
    ("seconds", "limit"), [(4.0, 2), (1.0, 2), (0.5, 3), (0.25, 5), (0.125, 9)]
)
def test_limit_grows_as_measured_tasks_get_shorter(seconds: float, limit: int) -> None:
    """The running task and ``ahead / duration`` behind it, at least one (ahead is 1 s here)."""
    policy = flowing(measured=seconds)
    assert policy.task_seconds == seconds
    assert policy.submit(tasks(*range(50))) == [Send(0, tuple(range(limit)))]


@pytest.mark.parametrize("seconds", [1e-9, 0.0])
def test_limit_is_capped_at_max_in_flight(seconds: float) -> None:
    policy = flowing(ahead=AHEAD_SECONDS, measured=seconds)
    actions = policy.submit(tasks(*range(3 * MAX_IN_FLIGHT)))
    assert actions == [Send(0, tuple(range(MAX_IN_FLIGHT)))]
    for i in range(MAX_IN_FLIGHT):
        policy.task_done(0, i)
        assert len(policy.in_flight(0)) <= MAX_IN_FLIGHT
    assert len(policy.in_flight(0)) > MAX_IN_FLIGHT // 2  # topped up meanwhile


def test_measured_durations_feed_a_moving_average() -> None:
    policy = flowing(measured=1.0)
    policy.submit(tasks(1, 2, 3))
    policy.task_done(0, 1, elapsed=2.0)
    assert policy.task_seconds == pytest.approx(1.2)  # 1.0 moved a fifth of the way to 2.0
    policy.task_done(0, 2)
    assert policy.task_seconds == pytest.approx(1.2)


def test_bytes_in_flight_are_capped() -> None:
    policy = flowing(measured=1e-3)  # the task count alone would allow MAX_IN_FLIGHT
    quarter = MAX_IN_FLIGHT_BYTES // 4
    assert policy.submit(sized(*range(10), size=quarter)) == [Send(0, (0, 1, 2, 3))]
    # One done frees the bytes of one more.
    assert policy.task_done(0, 0) == [Send(0, (4,))]
    assert policy.in_flight(0) == (1, 2, 3, 4)


def test_task_over_the_byte_cap_travels_alone() -> None:
    policy = flowing(measured=1e-3)
    big = MAX_IN_FLIGHT_BYTES + 1
    assert policy.submit(sized(0, size=big) + sized(1, 2)) == [Send(0, (0,))]
    assert policy.submit(sized(3)) == []  # nothing is queued behind it
    assert policy.task_done(0, 0) == [Send(0, (1, 2, 3))]
    assert policy.submit(sized(4, size=big)) == []  # and it is queued behind nothing
    assert policy.pending_count == 1


# -- flow control: sharing and topping up -------------------------------------------------------


def test_a_short_queue_is_spread_over_the_idle_workers() -> None:
    policy = flowing(3, measured=1e-3)
    assert policy.submit(tasks(0, 1, 2)) == [Send(0, (0,)), Send(1, (1,)), Send(2, (2,))]


def test_pending_work_is_shared_evenly_among_idle_workers() -> None:
    """Each of three idle workers gets a third of nine tasks, in one Send each (the limit,
    MAX_IN_FLIGHT here, is no constraint)."""
    policy = flowing(3, measured=1e-3)
    assert policy.submit(tasks(*range(9))) == [
        Send(0, (0, 1, 2)),
        Send(1, (3, 4, 5)),
        Send(2, (6, 7, 8)),
    ]


def test_workers_still_starting_count_as_takers() -> None:
    """Two of three workers are ready: they take their share, and leave the third its own for
    when it is ready."""
    policy = Policy(3, ahead_seconds=1.0)
    policy.start()
    policy.worker_ready(0)
    policy.worker_ready(1)
    policy.submit(tasks(-1))
    policy.task_done(0, -1, elapsed=1e-3)
    assert policy.submit(tasks(*range(6))) == [Send(0, (0, 1)), Send(1, (2, 3))]
    assert policy.pending_count == 2
    assert policy.worker_ready(2) == [Send(2, (4, 5))]


def test_busy_worker_is_topped_up_only_at_half_its_limit() -> None:
    policy = flowing(measured=0.125)  # 9 in flight
    assert policy.submit(tasks(*range(30))) == [Send(0, tuple(range(9)))]
    for i in range(4):
        assert policy.task_done(0, i) == []  # 8 down to 5 held: more than half
    # Down to 4 (9 // 2): back to the limit, in one Send.
    assert policy.task_done(0, 4) == [Send(0, tuple(range(9, 14)))]
    assert policy.in_flight(0) == tuple(range(5, 14))


# -- flow control: apply and timed tasks --------------------------------------------------------


def test_apply_tasks_travel_alone_to_idle_workers() -> None:
    policy = flowing(2, measured=1e-3)
    assert policy.submit(applied(0, 1, 2, 3)) == [Send(0, (0,)), Send(1, (1,))]
    assert policy.task_done(0, 0) == [Send(0, (2,))]
    assert policy.in_flight(1) == (1,)
    assert policy.pending_count == 1


def test_apply_task_is_never_queued_behind_another() -> None:
    policy = flowing(measured=1e-3)
    assert policy.submit(tasks(0, 1)) == [Send(0, (0, 1))]
    assert policy.submit(applied(2)) == []
    assert policy.task_done(0, 0) == []
    assert policy.task_done(0, 1) == [Send(0, (2,))]


def test_nothing_is_queued_behind_an_apply_task() -> None:
    policy = flowing(measured=1e-3)
    assert policy.submit(applied(0) + tasks(1, 2)) == [Send(0, (0,))]
    assert policy.submit(tasks(3)) == []
    assert policy.task_done(0, 0) == [Send(0, (1, 2, 3))]


def test_a_send_stops_before_an_apply_task() -> None:
    policy = flowing(measured=1e-3)
    assert policy.submit(tasks(0, 1) + applied(2) + tasks(3)) == [Send(0, (0, 1))]
    assert policy.task_done(0, 0) == []
    assert policy.task_done(0, 1) == [Send(0, (2,))]
    assert policy.task_done(0, 2) == [Send(0, (3,))]


def test_timed_task_travels_alone() -> None:
    """Alone, so that its deadline (the task core's) runs from when it starts."""
    policy = flowing(measured=1e-3)
    assert policy.submit(tasks(1, timeout=5.0) + tasks(*range(2, 100))) == [Send(0, (1,))]
    assert policy.submit(tasks(100)) == []  # nothing queued behind it
    # The untimed tasks after it go many to a Send.
    assert policy.task_done(0, 1) == [Send(0, tuple(range(2, 101)))]


def test_a_send_stops_before_a_timed_task() -> None:
    policy = flowing(measured=0.125)  # 9 in flight
    assert policy.submit(tasks(0, 1, 2) + tasks(3, timeout=2.0) + tasks(4)) == [Send(0, (0, 1, 2))]
    # Not queued behind them either: it waits for the worker to be idle.
    assert policy.task_done(0, 0) == []
    assert policy.task_done(0, 1) == []
    assert policy.task_done(0, 2) == [Send(0, (3,))]
    assert policy.pending_count == 1


# -- flow control: recalls for idle workers -----------------------------------------------------


def two_holding_two() -> Policy:
    """Two workers, nothing measured (two tasks in flight each): worker 0 idle, worker 1
    running 1 with 3 queued behind it, and a Recall of 3 for worker 0 sent."""
    policy = flowing(2, ahead=AHEAD_SECONDS)
    assert policy.submit(tasks(0, 1)) == [Send(0, (0,)), Send(1, (1,))]
    assert policy.submit(tasks(2, 3)) == [Send(0, (2,)), Send(1, (3,))]
    assert policy.task_done(0, 0) == []
    assert policy.task_done(0, 2) == [Recall(1, (3,))]
    return policy


def test_idle_worker_gets_the_work_recalled_from_a_busy_one() -> None:
    policy = two_holding_two()
    assert policy.submit([]) == []  # not asked twice while the answer is outstanding
    assert policy.in_flight(1) == (1, 3)
    # Worker 1 gives 3 back (it had not started it): the idle worker gets it.
    assert policy.tasks_recalled(1, [3]) == [Send(0, (3,))]
    assert policy.in_flight(0) == (3,)
    assert policy.in_flight(1) == (1,)
    assert policy.task_done(1, 1) == []
    assert policy.task_done(0, 3) == []


@pytest.mark.parametrize(
    ("seconds", "recalled"), [(RECALL_MIN_SECONDS / 2, True), (RECALL_MIN_SECONDS / 4, False)]
)
def test_recall_only_when_the_queued_work_is_worth_the_trip(seconds: float, recalled: bool) -> None:
    """Worker 1 holds two tasks queued behind its running one: measured at seconds each, they
    stand for RECALL_MIN_SECONDS (recalled) or half of it (left to run where they are)."""
    policy = flowing(2, measured=seconds)
    assert policy.submit(applied(9)) == [Send(0, (9,))]
    policy.submit(tasks(0, 1, 2))
    assert policy.in_flight(1) == (0, 1, 2)
    actions = policy.task_done(0, 9)
    assert actions == ([Recall(1, (1, 2))] if recalled else [])


def test_recalled_tasks_are_queued_again_first_in_line() -> None:
    policy = two_holding_two()
    # Before the answer comes, new work keeps worker 0 busy and leaves 6 pending.
    assert policy.submit(tasks(4, 5, 6)) == [Send(0, (4, 5))]
    assert policy.tasks_recalled(1, [3]) == [Send(1, (3,))]  # 3 ahead of 6
    assert policy.in_flight(1) == (1, 3)
    assert policy.task_done(0, 4) == [Send(0, (6,))]


def test_recalled_task_cancelled_meanwhile_is_dropped_not_queued_again() -> None:
    policy = two_holding_two()
    # No second Recall: one is outstanding.
    assert policy.cancel([3]) == []
    assert policy.tasks_recalled(1, [3]) == []
    assert policy.pending_count == 0
    assert policy.in_flight(0) == ()
    assert policy.in_flight(1) == (1,)


@pytest.mark.parametrize("answer_first", [True, False])
def test_task_started_before_its_recall_ends_normally(answer_first: bool) -> None:
    """Worker 1 had moved on to 3 when the recall came: it gives nothing back, and its report of
    3 (before or after that answer) is the task's outcome."""
    policy = two_holding_two()
    assert policy.task_done(1, 1) == []
    actions = []
    if answer_first:
        actions += policy.tasks_recalled(1, [])
    assert policy.expects_report(1, 3)
    actions += policy.task_done(1, 3)
    if not answer_first:
        actions += policy.tasks_recalled(1, [])
    assert actions == []
    assert policy.in_flight(1) == ()
    assert policy.pending_count == 0
    assert policy.submit(tasks(4)) == [Send(0, (4,))]  # both idle, as before


# -- maxtasksperchild ---------------------------------------------------------------------------


def test_maxtasks_retires_worker_and_spawns_replacement() -> None:
    policy = started(1, maxtasks=2)
    policy.submit(tasks(1))
    assert policy.task_done(0, 1) == []  # one of two
    policy.submit(tasks(2, 3))
    actions = policy.task_done(0, 2)
    assert actions == [Stop(0), Spawn(1)]
    assert policy.pending_count == 1  # task 3 waits for the replacement
    assert policy.worker_ready(1) == [Send(1, (3,))]
    assert policy.worker_exited(0) == []  # the retired worker's exit changes nothing
    assert policy.worker_ids() == [1]


def test_maxtasks_quota_caps_what_a_worker_is_sent() -> None:
    policy = flowing(maxtasks=6, measured=1e-3)  # the measured task was 1 of 6
    assert policy.submit(tasks(*range(100))) == [Send(0, tuple(range(5)))]
    for i in range(4):
        assert policy.task_done(0, i) == []  # never topped up past the quota
    assert policy.task_done(0, 4) == [Stop(0), Spawn(1)]
    assert policy.worker_ready(1) == [Send(1, tuple(range(5, 11)))]  # a fresh quota of 6


def test_maxtasks_quota_caps_the_limit_before_measurement() -> None:
    policy = flowing(maxtasks=1, ahead=AHEAD_SECONDS)
    assert policy.submit(tasks(1, 2, 3)) == [Send(0, (1,))]
    assert policy.task_done(0, 1) == [Stop(0), Spawn(1)]


# -- worker deaths ----------------------------------------------------------------------------


def test_death_fails_running_task_and_requeues_the_rest() -> None:
    """A worker runs its tasks in order: only the first unreported one was running. It fails
    with WORKER_LOST; the tasks that never started go back to the head of the queue."""
    policy = flowing(measured=0.25)  # 5 in flight
    assert policy.submit(tasks(*range(10))) == [Send(0, (0, 1, 2, 3, 4))]
    assert policy.task_done(0, 0) == []
    actions = policy.worker_exited(0)
    assert actions == [lost(1, 0), Spawn(1)]
    assert policy.pending_count == 8
    # The requeued tasks run first, on the replacement.
    assert policy.worker_ready(1) == [Send(1, (2, 3, 4, 5, 6))]


def test_idle_worker_death_fails_nothing_and_is_replaced() -> None:
    policy = started(2)
    assert policy.worker_exited(0) == [Spawn(2)]


def test_ready_replacement_picks_up_pending_work() -> None:
    policy = started(1)
    policy.submit(tasks(1, 2))
    actions = policy.worker_exited(0)
    assert actions == [lost(1, 0), Spawn(1)]
    assert policy.worker_ready(1) == [Send(1, (2,))]


def test_startup_failures_break_the_pool() -> None:
    policy = make(1)
    policy.start()
    policy.submit(tasks(1, 2))
    wid = 0
    for _ in range(MAX_STARTUP_FAILURES - 1):
        actions = policy.worker_exited(wid)
        assert actions == [Spawn(wid + 1)]
        wid += 1
    actions = policy.worker_exited(wid)
    assert actions == [Fail((1, 2))]
    assert policy.state is Lifecycle.BROKEN
    assert policy.finished
    assert policy.submit(tasks(3)) == [Fail((3,))]


def test_break_kills_workers_still_starting_and_stops_idle_ones() -> None:
    policy = make(3)
    policy.start()
    policy.worker_ready(0)
    policy.submit(tasks(1, 2))  # 1 goes to worker 0, 2 waits
    actions = policy.worker_exited(1)  # 1 failure
    assert actions == [Spawn(3)]
    actions = policy.worker_exited(2)  # 2
    assert actions == [Spawn(4)]
    actions = policy.worker_exited(3)  # 3: broken
    assert Fail((2,)) in actions
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
    policy = make(1)
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
    policy = started(2)
    policy.submit(tasks(1, 2))
    actions = policy.worker_exited(0)  # loses task 1, wants a replacement
    assert actions == [lost(1, 0), Spawn(2)]
    assert policy.spawn_failed(2) == []
    assert policy.state is Lifecycle.RUN
    assert policy.worker_ids() == [1]
    policy.submit(tasks(3))
    assert policy.task_done(1, 2) == [Send(1, (3,))]


def test_spawn_failed_with_no_worker_alive_breaks() -> None:
    policy = started(1)
    policy.submit(tasks(1, 2))
    actions = policy.worker_exited(0)
    assert actions == [lost(1, 0), Spawn(1)]
    actions = policy.spawn_failed(1)
    assert actions == [Fail((2,))]
    assert policy.state is Lifecycle.BROKEN
    assert policy.finished
    assert policy.submit(tasks(3)) == [Fail((3,))]


def test_break_pool_is_idempotent_and_fails_pending() -> None:
    policy = make(2)
    policy.start()
    policy.submit(tasks(1, 2))
    actions = policy.break_pool()
    assert Fail((1, 2)) in actions
    assert set(of(actions, Kill)) == {Kill(0), Kill(1)}
    assert policy.break_pool() == []


# -- timeouts ---------------------------------------------------------------------------------


def test_timed_out_kills_only_the_worker_running_the_task() -> None:
    policy = started(2)
    policy.submit(tasks(1, timeout=5.0))
    policy.submit(tasks(2, timeout=5.0))
    actions = policy.timed_out(1)
    assert actions == [Kill(0), lost(1, 0, FailReason.TIMED_OUT, timeout=5.0), Spawn(2)]
    assert policy.in_flight(0) == ()
    assert policy.in_flight(1) == (2,)
    assert policy.timed_out(1) == []  # not twice
    # The killed worker's exit loses nothing more and spawns nothing more.
    assert policy.worker_exited(0) == []
    assert policy.worker_ids() == [1, 2]


def test_timed_out_for_a_task_no_worker_runs_does_nothing() -> None:
    """The deadline passed as the task ended, or before it was sent: nothing to stop."""
    policy = started(1)
    policy.submit(tasks(1, timeout=5.0) + tasks(2, timeout=5.0))
    assert policy.task_done(0, 1) == [Send(0, (2,))]
    assert policy.timed_out(1) == []  # it ended meanwhile
    assert policy.timed_out(3) == []  # never sent
    assert policy.in_flight(0) == (2,)


def test_late_task_done_for_timed_out_task_is_ignored() -> None:
    policy = started(1)
    policy.submit(tasks(1, timeout=1.0) + tasks(2))
    policy.timed_out(1)
    assert not policy.expects_report(0, 1)
    assert policy.task_done(0, 1) == []
    assert policy.pending_count == 1  # task 2 still waits for the replacement
    assert policy.worker_ready(1) == [Send(1, (2,))]


# -- close ------------------------------------------------------------------------------------


def test_close_runs_pending_then_stops_idle_workers() -> None:
    policy = started(2)
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
    policy = started(2)
    assert policy.close() == [Stop(0), Stop(1)]
    assert not policy.finished
    policy.worker_exited(0)
    policy.worker_exited(1)
    assert policy.finished


def test_close_before_ready_stops_workers_once_ready() -> None:
    policy = make(2)
    policy.start()
    assert policy.close() == []
    assert policy.worker_ready(0) == [Stop(0)]
    assert policy.worker_ready(1) == [Stop(1)]


def test_close_respawns_while_work_is_pending() -> None:
    policy = started(1, maxtasks=1)
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
    policy = started(1)
    policy.submit(tasks(1, 2))
    policy.close()
    actions = policy.worker_exited(0)
    assert actions == [lost(1, 0), Spawn(1)]
    assert policy.worker_ready(1) == [Send(1, (2,))]


def test_close_death_without_pending_work_does_not_respawn() -> None:
    policy = started(2)
    policy.submit(tasks(1))
    assert policy.close() == [Stop(1)]
    assert policy.worker_exited(0) == [lost(1, 0)]
    assert not policy.finished
    policy.worker_exited(1)
    assert policy.finished


# -- terminate --------------------------------------------------------------------------------


def test_terminate_drops_everything_and_kills_every_worker() -> None:
    """The task core fails every task; the policy drops them all and only kills."""
    policy = started(2)
    policy.submit(tasks(*range(20)))  # one task on each worker, the rest pending
    actions = policy.terminate()
    assert policy.state is Lifecycle.TERMINATE
    assert actions == [Kill(0), Kill(1)]
    assert policy.pending_count == 0
    assert policy.in_flight(0) == ()
    assert not policy.finished
    assert policy.worker_exited(0) == []  # nothing lost, nobody respawned
    assert not policy.finished
    assert policy.worker_exited(1) == []
    assert policy.finished
    assert policy.terminate() == []


def test_terminate_kills_starting_and_leaving_workers() -> None:
    policy = started(2, maxtasks=1)
    policy.submit(tasks(1))
    assert policy.task_done(0, 1) == [Stop(0), Spawn(2)]
    actions = policy.terminate()
    assert set(of(actions, Kill)) == {Kill(0), Kill(1), Kill(2)}
    # A worker that dies while starting after terminate is no start-up failure.
    assert policy.worker_exited(2) == []
    assert policy.state is Lifecycle.TERMINATE


def test_terminate_ignores_late_results_and_timeouts() -> None:
    policy = started(1)
    policy.submit(tasks(1, timeout=1.0))
    assert policy.terminate() == [Kill(0)]
    assert policy.timed_out(1) == []
    assert not policy.expects_report(0, 1)
    assert policy.task_done(0, 1, again=True) == []
    assert policy.pending_count == 0


def test_terminate_after_close() -> None:
    policy = started(1)
    policy.submit(tasks(1, 2))
    policy.close()
    assert policy.terminate() == [Kill(0)]
    assert policy.pending_count == 0
    assert policy.close() == []
    assert policy.state is Lifecycle.TERMINATE


# -- repopulate -------------------------------------------------------------------------------


def test_repopulate_fills_up_after_failed_spawn() -> None:
    policy = started(2)
    policy.worker_exited(0)
    policy.spawn_failed(2)
    assert policy.worker_ids() == [1]
    assert policy.repopulate() == [Spawn(3)]
    assert policy.repopulate() == []


@pytest.mark.parametrize("ahead", [0.0, AHEAD_SECONDS])
@pytest.mark.parametrize("processes", [1, 4])
def test_every_submitted_task_ends_exactly_once(processes: int, ahead: float) -> None:
    """A longer run mixing completions, deaths, retirements, flow control and recalls: every
    task ends exactly once (completed, or lost with its worker: no retries here; the task core's
    retries are driven in test_policy_faults.py), none is lost or run twice."""
    policy = Policy(processes, 3, ahead_seconds=ahead)
    outstanding: dict[int, int] = {}  # task -> worker, in the order sent
    ended: list[int] = []
    recalls = 0

    def apply(actions: list) -> None:
        nonlocal recalls
        for action in actions:
            if isinstance(action, Send):
                for t in action.task_ids:
                    assert t not in outstanding
                    outstanding[t] = action.wid
            elif isinstance(action, Lost):
                assert action.reason is FailReason.WORKER_LOST
                assert action.task.task_id not in outstanding  # the loop below took it out
                ended.append(action.task.task_id)
            elif isinstance(action, Spawn):
                apply(policy.worker_ready(action.wid))
            elif isinstance(action, Stop):
                apply(policy.worker_exited(action.wid))
            elif isinstance(action, Recall):
                # Answered at once: a Recall names only tasks queued behind the running one,
                # and here a worker starts a task only when the loop below reports it.
                recalls += 1
                for t in action.task_ids:
                    assert outstanding.pop(t) == action.wid
                apply(policy.tasks_recalled(action.wid, action.task_ids))

    apply(policy.start())
    apply(policy.submit([TaskInfo(i, None, 30) for i in range(200)]))
    step = 0
    while outstanding:
        step += 1
        task, wid = next(iter(outstanding.items()))  # the earliest sent: workers run in order
        assert policy.expects_report(wid, task)
        if step % 17 == 0:
            # It dies: what it ran is reported lost, the rest comes back by a later Send.
            for t in [t for t, w in outstanding.items() if w == wid]:
                del outstanding[t]
            apply(policy.worker_exited(wid))
        else:
            del outstanding[task]
            ended.append(task)
            apply(policy.task_done(wid, task, elapsed=(None, 1e-5, 1e-3)[step % 3]))
    assert sorted(ended) == list(range(200))
    assert policy.pending_count == 0
    apply(policy.close())
    assert policy.finished
    if ahead and processes > 1:
        assert recalls  # the run did exercise them


# -- flow control and faults --------------------------------------------------------------------


def test_death_requeues_the_tasks_queued_behind_the_running_one() -> None:
    policy = flowing(2, ahead=AHEAD_SECONDS)
    assert policy.submit(tasks(0, 1)) == [Send(0, (0,)), Send(1, (1,))]
    assert policy.submit(tasks(2, 3)) == [Send(0, (2,)), Send(1, (3,))]
    assert policy.worker_exited(0) == [lost(0, 0), Spawn(2)]
    assert policy.pending_count == 1
    assert policy.in_flight(1) == (1, 3)  # the other worker is untouched
    assert policy.worker_ready(2) == [Send(2, (2,))]


def test_terminate_drops_queued_tasks_too() -> None:
    policy = flowing(2, ahead=AHEAD_SECONDS)
    policy.submit(tasks(*range(6)))
    assert policy.in_flight(0) == (0, 1)
    assert policy.in_flight(1) == (2, 3)
    assert policy.terminate() == [Kill(0), Kill(1)]
    assert policy.in_flight(0) == policy.in_flight(1) == ()
    assert policy.pending_count == 0
    # Reports of the tasks they were running or held are not expected any more.
    assert policy.task_done(0, 0) == policy.task_done(1, 3) == []


def test_death_after_break_fails_unstarted_tasks() -> None:
    """The pool broke while a busy worker held a task queued behind its running one; then that
    worker died.

    Its running task is reported lost (WORKER_LOST). The task it had not started can never run
    (the pool is broken, no worker will come): it must be failed (Fail), not sit in the queue of
    a policy that says it has finished (the scheduler would then exit and leave it unresolved).
    """
    policy = flowing(ahead=AHEAD_SECONDS)
    assert policy.submit(tasks(0, 1, 2)) == [Send(0, (0, 1))]
    assert failed_ids(policy.break_pool()) == {2}
    assert policy.in_flight(0) == (0, 1)
    actions = policy.worker_exited(0)
    assert lost(0, 0) in actions
    assert failed_ids(actions) == {1}
    assert policy.pending_count == 0
    assert policy.finished
