"""Unit tests of the task core (``_tasks.TaskCore``): ids, attempts and their record, retries
and ``retry_on``, deadlines, cancellation, the pool's end, and where each outcome goes. No
processes, no cluster: a recording sink and a clock set by hand."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import pytest

from _clock import FakeClock
from _sinks import Delivered, RecordingSink
from procpool._backend import Measured, PreparedTask
from procpool._errors import (
    InitializerError,
    PoolTerminatedError,
    TaskCancelledError,
    TaskTimeoutError,
    WorkerLostError,
    attempts_note,
)
from procpool._protocol import Mode, Status, encode_exception
from procpool._serialize import decode_exception
from procpool._tasks import TaskCore

RESULT = memoryview(pickle.dumps("result"))
RAISED = memoryview(encode_exception(ValueError("flaky")))  # what a worker sends for a raise


def prepared(
    sink: RecordingSink,
    index: int = 0,
    *,
    timeout: float | None = None,
    retries: int = 0,
    return_exceptions: bool = False,
) -> PreparedTask:
    return PreparedTask(
        Mode.APPLY,
        b"function",
        b"arguments",
        sink,
        index,
        "work",
        timeout=timeout,
        retries=retries,
        return_exceptions=return_exceptions,
    )


def core_with(
    count: int = 1, **options: float | bool | None
) -> tuple[TaskCore, FakeClock, RecordingSink, list[int]]:
    """A core holding ``count`` tasks of one sink (indices 0, 1, ...), all with ``options``."""
    clock = FakeClock()
    core = TaskCore(clock)
    sink = RecordingSink()
    ids = core.add([prepared(sink, i, **options) for i in range(count)])  # type: ignore[arg-type]
    return core, clock, sink, ids


def lost(message: str) -> BaseException:
    """The error factory a backend passes for a lost worker."""
    return WorkerLostError(f"{message}; replaced", 4321, -9)


def timed_out(message: str) -> BaseException:
    return TaskTimeoutError(message)


# -- tasks come and end -----------------------------------------------------------------------


def test_add_gives_each_task_its_own_id_and_keeps_it_until_it_ends() -> None:
    core = TaskCore(FakeClock())
    first, second = RecordingSink(), RecordingSink()
    tasks = [prepared(first, 0), prepared(second, 0), prepared(first, 1)]
    ids = core.add(tasks)
    assert len(set(ids)) == 3
    assert len(core) == 3
    assert [core.task(i) for i in ids] == tasks
    assert core.ids_of(first) == [ids[0], ids[2]]
    assert core.ids_of(second) == [ids[1]]
    assert sorted(core.unfinished()) == sorted(ids)
    assert core.add([]) == []
    assert core.add([prepared(first, 2)])[0] not in ids  # ids are never reused
    assert core.broken is None


def test_completed_delivers_the_outcome_once_and_forgets_the_task() -> None:
    core, _, sink, [task_id] = core_with()
    assert core.completed(task_id, Status.OK, RESULT, where="in worker process 7") is False
    assert sink.delivered() == Delivered(Status.OK, bytes(RESULT), ())
    assert core.task(task_id) is None
    assert len(core) == 0
    assert core.ids_of(sink) == []


@pytest.mark.parametrize("status", [Status.ERROR, Status.UNDECODABLE])
def test_a_tasks_own_exception_is_delivered_as_reported(status: Status) -> None:
    core, _, sink, [task_id] = core_with(retries=3)  # retries are for losses and retry_on
    assert core.completed(task_id, status, RAISED) is False
    assert sink.delivered() == Delivered(status, bytes(RAISED), ())


def test_late_reports_for_an_ended_task_are_ignored() -> None:
    core, _, sink, [task_id] = core_with(retries=2)
    core.completed(task_id, Status.OK, RESULT)
    assert core.completed(task_id, Status.ERROR, RAISED) is False
    assert core.completed(task_id, Status.RETRY, RAISED) is False
    assert core.ended(task_id, "was lost", lost) is False
    assert core.fail([task_id], core.final_error) == {}
    assert core.cancel(sink) == {}
    core.terminate()
    assert sink.delivered() == Delivered(Status.OK, bytes(RESULT), ())  # and nothing else


def test_unknown_ids_are_ignored() -> None:
    core, _, sink, [task_id] = core_with()
    assert core.completed(task_id + 100, Status.OK, RESULT) is False
    assert core.ended(task_id + 100, "was lost", lost) is False
    core.started(task_id + 100)
    assert core.next_deadline() is None
    assert sink.calls == []
    assert len(core) == 1


def test_fail_ends_only_the_named_tasks_and_says_which_it_ended() -> None:
    core, _, sink, ids = core_with(3)
    core.completed(ids[0], Status.OK, RESULT)
    failed = core.fail([ids[0], ids[1]], lambda task: RuntimeError(f"gone: {task.label}"))
    assert list(failed) == [ids[1]]
    assert failed[ids[1]].index == 1
    assert str(sink.error(1)) == "gone: work"
    assert core.unfinished() == [ids[2]]


# -- attempts after a lost worker or a timeout --------------------------------------------------


def test_lost_attempts_are_retried_until_attempts_run_out() -> None:
    core, _, sink, [task_id] = core_with(retries=2)
    assert core.ended(task_id, "was running in worker process 1, which died", lost) is True
    assert core.ended(task_id, "ran past its 5 s timeout", timed_out) is True
    assert sink.calls == []  # retried, not ended
    assert core.ended(task_id, "was running in worker process 3, which died", lost) is False
    error = sink.error()
    assert type(error) is WorkerLostError
    assert str(error) == "task work was running in worker process 3, which died; replaced"
    assert (error.pid, error.exitcode) == (4321, -9)
    # The final error says how the earlier attempts ended.
    assert error.__notes__ == [
        attempts_note(["was running in worker process 1, which died", "ran past its 5 s timeout"])
    ]
    assert core.task(task_id) is None


def test_a_task_without_retries_fails_at_its_first_loss_without_a_note() -> None:
    core, _, sink, [task_id] = core_with()
    assert core.ended(task_id, "ran past its 1 s timeout", timed_out) is False
    error = sink.error()
    assert type(error) is TaskTimeoutError
    assert str(error) == "task work ran past its 1 s timeout"
    assert not hasattr(error, "__notes__")


def test_a_lost_item_fails_alone_and_its_task_runs_again_without_it() -> None:
    core, _, sink, [task_id] = core_with(return_exceptions=True)
    task = core.task(task_id)
    assert task is not None
    task.items = 5
    what = "was running in worker process 1, which was killed by signal 9"
    assert core.item_lost(task_id, 3, what, lost) is True
    assert sink.calls == []  # the task runs again, for its other items
    assert list(task.fallen) == [3]
    error = decode_exception(task.fallen[3])
    assert type(error) is WorkerLostError
    assert str(error) == f"task work (item 3 of a chunk of 5) {what}; replaced"
    assert (error.pid, error.exitcode) == (4321, -9)
    assert error.__cause__ is None  # never raised: no remote traceback to show
    # Another loss in the next attempt fails one more item, and the attempt is not recorded
    # against the task: its outcome, when it comes, carries no note.
    assert core.item_lost(task_id, 0, "was lost", lost) is True
    assert sorted(task.fallen) == [0, 3]
    assert core.completed(task_id, Status.OK, RESULT) is False
    outcome = sink.outcome()
    assert isinstance(outcome, Delivered)
    assert outcome.attempts == ()


def test_a_lost_item_of_a_task_with_retries_left_reruns_the_whole_task() -> None:
    core, _, sink, [task_id] = core_with(return_exceptions=True, retries=1)
    task = core.task(task_id)
    assert task is not None
    assert core.item_lost(task_id, 2, "was lost", lost) is True
    assert task.fallen == {}  # the item gets its retry with the others
    # Out of retries: the item that kills the worker now fails alone.
    assert core.item_lost(task_id, 2, "was lost again", lost) is True
    assert list(task.fallen) == [2]
    assert sink.calls == []


def test_a_lost_item_fails_the_whole_task_once_terminated() -> None:
    core, _, sink, [task_id] = core_with(return_exceptions=True)
    core.break_pool(RuntimeError("broken"))
    assert core.item_lost(task_id, 0, "was lost", lost) is False
    assert type(sink.error()) is WorkerLostError


def test_a_retried_task_that_then_succeeds_is_delivered_with_its_record() -> None:
    core, _, sink, [task_id] = core_with(retries=3)
    assert core.ended(task_id, "was lost", lost) is True
    assert core.completed(task_id, Status.OK, RESULT) is False
    assert sink.delivered() == Delivered(Status.OK, bytes(RESULT), ("was lost",))


# -- retry_on: the task raised an exception worth a retry --------------------------------------


def test_retry_on_exception_is_retried_then_delivered_as_an_error() -> None:
    core, _, sink, [task_id] = core_with(retries=1)
    assert core.completed(task_id, Status.RETRY, RAISED, where="in worker process 7") is True
    assert sink.calls == []
    assert core.task(task_id) is not None
    # The last attempt: what the task raised is delivered, as the task's own error.
    assert core.completed(task_id, Status.RETRY, RAISED, where="in worker process 8") is False
    assert sink.delivered() == Delivered(
        Status.ERROR, bytes(RAISED), ("raised ValueError: flaky in worker process 7",)
    )


def test_retry_on_exception_with_return_exceptions_is_delivered_ok() -> None:
    """A chunk that returns exceptions in place delivers its list of results and exceptions:
    Status OK, whatever raised inside it."""
    core, _, sink, [task_id] = core_with(retries=1, return_exceptions=True)
    assert core.completed(task_id, Status.RETRY, RESULT) is True
    assert core.completed(task_id, Status.RETRY, RESULT) is False
    assert sink.delivered() == Delivered(
        Status.OK, bytes(RESULT), ("raised an exception worth a retry for one of its items",)
    )


def test_retry_on_exception_without_retries_is_delivered_at_once() -> None:
    core, _, sink, [task_id] = core_with()
    assert core.completed(task_id, Status.RETRY, RAISED) is False
    assert sink.delivered() == Delivered(Status.ERROR, bytes(RAISED), ())


def test_attempts_count_across_reasons() -> None:
    core, _, sink, [task_id] = core_with(retries=2)
    assert core.ended(task_id, "was lost", lost) is True
    assert core.completed(task_id, Status.RETRY, RAISED) is True
    # The third attempt was the last, however it ends.
    assert core.ended(task_id, "ran past its 1 s timeout", timed_out) is False
    assert sink.error().__notes__ == [attempts_note(["was lost", "raised ValueError: flaky"])]


# -- deadlines ----------------------------------------------------------------------------------


def test_a_deadline_runs_from_the_start_of_an_attempt() -> None:
    clock = FakeClock()
    core = TaskCore(clock)
    sink = RecordingSink()
    untimed, timed = core.add([prepared(sink, 0), prepared(sink, 1, timeout=5.0)])
    clock.advance(100.0)
    assert core.next_deadline() is None  # queued, not started: no deadline
    core.started(untimed)
    assert core.next_deadline() is None
    core.started(timed)
    assert core.next_deadline() == clock.now + 5.0


def test_expired_reports_each_attempt_past_its_deadline_once() -> None:
    core, clock, _, ids = core_with(3, timeout=5.0)
    start = clock.now
    core.started(ids[0])
    clock.advance(2.0)
    core.started(ids[1])
    core.started(ids[2])
    assert core.next_deadline() == start + 5.0
    clock.advance(2.9)
    assert core.expired() == []  # start + 4.9
    clock.advance(0.1)  # exactly start + 5
    assert core.expired() == [ids[0]]
    assert core.expired() == []  # not twice
    assert core.next_deadline() == start + 7.0
    clock.advance(2.0)
    assert sorted(core.expired()) == ids[1:]
    assert core.next_deadline() is None
    assert len(core) == 3  # expiring ends nothing: the backend reports how the attempt ended


def test_a_new_attempt_gets_a_fresh_deadline() -> None:
    core, clock, sink, [task_id] = core_with(timeout=5.0, retries=1)
    core.started(task_id)
    clock.advance(5.0)
    assert core.expired() == [task_id]
    assert core.ended(task_id, "ran past its 5 s timeout", timed_out) is True
    assert core.next_deadline() is None
    clock.advance(1.0)
    core.started(task_id)
    assert core.next_deadline() == clock.now + 5.0
    clock.advance(5.0)
    assert core.expired() == [task_id]
    assert core.ended(task_id, "ran past its 5 s timeout", timed_out) is False
    assert type(sink.error()) is TaskTimeoutError


@pytest.mark.parametrize(
    "end",
    ["completed", "retry_on", "ended", "ended_retried", "cancel", "fail", "terminate"],
)
def test_a_deadline_is_cleared_when_the_attempt_ends(end: str) -> None:
    core, clock, sink, [task_id] = core_with(timeout=3.0, retries=1)
    core.started(task_id)
    assert core.next_deadline() == clock.now + 3.0
    if end == "completed":
        core.completed(task_id, Status.OK, RESULT)
    elif end == "retry_on":
        assert core.completed(task_id, Status.RETRY, RAISED) is True
    elif end == "ended":
        core.ended(task_id, "was lost", lost)
    elif end == "ended_retried":
        assert core.ended(task_id, "was lost", lost) is True
    elif end == "cancel":
        core.cancel(sink)
    elif end == "fail":
        core.fail([task_id], core.final_error)
    else:
        core.terminate()
    assert core.next_deadline() is None
    clock.advance(10.0)
    assert core.expired() == []


def test_started_after_the_task_ended_sets_no_deadline() -> None:
    core, _, sink, [task_id] = core_with(timeout=3.0)
    core.cancel(sink)
    core.started(task_id)
    assert core.next_deadline() is None


# -- cancellation -------------------------------------------------------------------------------


def test_cancel_fails_only_that_sinks_tasks() -> None:
    core = TaskCore(FakeClock())
    cancelled, other = RecordingSink(), RecordingSink()
    ids = core.add([prepared(cancelled, 0), prepared(other, 0), prepared(cancelled, 1)])
    stopped = core.cancel(cancelled)
    # The attempts to stop, by id: the backend stops them wherever they run.
    assert sorted(stopped) == [ids[0], ids[2]]
    assert [t.sink for t in stopped.values()] == [cancelled, cancelled]
    for index in (0, 1):
        error = cancelled.error(index)
        assert type(error) is TaskCancelledError
        assert str(error) == "task work was cancelled"
    assert other.calls == []
    assert core.unfinished() == [ids[1]]
    assert core.cancel(cancelled) == {}  # nothing left to cancel
    # A task of the cancelled result that comes later (its feeder was still reading) is
    # refused and failed at once; the other result's tasks are still taken.
    late, accepted = core.add([prepared(cancelled, 2), prepared(other, 1)])
    assert late is None
    assert accepted is not None
    assert type(cancelled.error(2)) is TaskCancelledError
    # The running attempt's report, should it come, is not delivered.
    assert core.completed(ids[0], Status.OK, RESULT) is False
    assert len(cancelled.ended()) == 3  # indices 0, 1 and the late 2, each failed once


def test_a_cancelled_task_with_retries_is_not_retried() -> None:
    core, _, sink, [task_id] = core_with(retries=3)
    assert core.ended(task_id, "was lost", lost) is True
    core.cancel(sink)
    assert core.ended(task_id, "was lost", lost) is False
    assert core.completed(task_id, Status.RETRY, RAISED) is False
    assert type(sink.error()) is TaskCancelledError
    # As every final error of a task that had failed attempts, it says how they ended.
    assert sink.error().__notes__ == [attempts_note(["was lost"])]


# -- the pool's end: terminate and break --------------------------------------------------------


def test_terminate_fails_every_task_and_refuses_later_ones() -> None:
    core, _, sink, ids = core_with(3, timeout=1.0, retries=2)
    core.started(ids[0])
    core.terminate()
    for index in range(3):
        error = sink.error(index)
        assert type(error) is PoolTerminatedError
        assert str(error) == "the pool was terminated before task work finished"
    assert len(core) == 0
    assert core.next_deadline() is None
    # A task submitted afterwards fails at once and gets no id.
    late = RecordingSink()
    assert core.add([prepared(late)]) == [None]
    assert type(late.error()) is PoolTerminatedError
    assert len(core) == 0
    core.terminate()  # again: nothing more happens
    assert len(sink.ended()) == 3


def test_terminate_does_not_fail_a_cancelled_task_again() -> None:
    core = TaskCore(FakeClock())
    cancelled, other = RecordingSink(), RecordingSink()
    core.add([prepared(cancelled), prepared(other)])
    core.cancel(cancelled)
    core.terminate()
    assert type(cancelled.error()) is TaskCancelledError
    assert type(other.error()) is PoolTerminatedError


def broken_core(
    count: int = 2, retries: int = 3
) -> tuple[TaskCore, RecordingSink, list[int], InitializerError]:
    """A core holding ``count`` tasks with retries, broken by an initializer that raised."""
    core, _, sink, ids = core_with(count, retries=retries)
    error = InitializerError("the pool's initializer raised")
    error.__cause__ = KeyError("missing")
    core.break_pool(error)
    return core, sink, ids, error


def test_break_pool_fails_nothing_by_itself() -> None:
    """Tasks accepted before the break end as the backend reports them: a running attempt may
    still deliver its result."""
    core, sink, ids, error = broken_core()
    assert core.broken is error
    assert sink.calls == []
    assert core.completed(ids[0], Status.OK, RESULT) is False
    assert sink.delivered(0) == Delivered(Status.OK, bytes(RESULT), ())


def test_no_retry_once_broken() -> None:
    core, sink, ids, _ = broken_core()
    assert core.ended(ids[0], "was lost", lost) is False
    assert type(sink.error(0)) is WorkerLostError  # the attempt's own error, not the break's
    assert core.completed(ids[1], Status.RETRY, RAISED) is False
    assert sink.delivered(1) == Delivered(Status.ERROR, bytes(RAISED), ())


def test_no_retry_once_terminated_and_no_retry_after_a_retry_before() -> None:
    """Terminating while a retried task is running fails it; its later reports are ignored."""
    core, _, sink, [task_id] = core_with(retries=3)
    assert core.ended(task_id, "was lost", lost) is True
    core.terminate()
    assert core.ended(task_id, "was lost", lost) is False
    assert core.completed(task_id, Status.RETRY, RAISED) is False
    error = sink.error()
    assert type(error) is PoolTerminatedError
    assert error.__notes__ == [attempts_note(["was lost"])]


def test_tasks_failed_after_a_break_each_get_their_own_copy_of_the_error() -> None:
    core, sink, ids, error = broken_core(3)
    assert sorted(core.fail(ids, core.final_error)) == ids
    late = RecordingSink()
    assert core.add([prepared(late)]) == [None]  # refused, and failed with the break's error too
    errors = [sink.error(0), sink.error(1), sink.error(2), late.error()]
    assert len({id(e) for e in errors}) == 4
    for copy in errors:
        assert copy is not error
        assert type(copy) is InitializerError
        assert copy.args == error.args
        assert copy.__cause__ is error.__cause__


def test_the_first_break_is_the_one_reported() -> None:
    core, sink, ids, error = broken_core(1)
    core.break_pool(RuntimeError("a later failure"))
    assert core.broken is error
    core.fail(ids, core.final_error)
    assert type(sink.error()) is InitializerError


# -- thread safety ------------------------------------------------------------------------------


def test_sinks_are_called_outside_the_cores_lock() -> None:
    """A sink may call back into the backend, and so into the core, from its callback: the
    core must not hold its lock then (it is not reentrant: this would hang)."""
    core = TaskCore(FakeClock())
    seen: list[list[int]] = []

    class Reentrant(RecordingSink):
        def _fail(self, index: int, exc: BaseException) -> None:
            seen.append(core.unfinished())
            super()._fail(index, exc)

        def _deliver(self, *args: object, **kwargs: object) -> None:
            seen.append(core.ids_of(self))
            super()._deliver(*args, **kwargs)  # type: ignore[arg-type]

    sink = Reentrant()
    ids = core.add([prepared(sink, i, retries=1) for i in range(6)])

    def end_them() -> None:
        core.completed(ids[0], Status.OK, RESULT)
        core.completed(ids[1], Status.RETRY, RAISED)
        core.completed(ids[1], Status.RETRY, RAISED)
        core.ended(ids[2], "was lost", lost)
        core.ended(ids[2], "was lost", lost)
        core.fail([ids[3]], core.final_error)
        core.cancel(sink)  # ids[4] and ids[5]
        core.terminate()
        core.add([prepared(sink, 6)])

    thread = threading.Thread(target=end_them, daemon=True)
    thread.start()
    thread.join(10.0)
    assert not thread.is_alive(), "a sink called back into the core and hung on its lock"
    assert sorted(sink.ended()) == list(range(7))
    assert len(seen) == 7


def test_reports_from_many_threads_deliver_every_task_exactly_once() -> None:
    """The Dask backend reports from several threads: every task ends once, whoever reports
    it and however often."""
    core = TaskCore(FakeClock())
    sink = RecordingSink()
    ids = core.add([prepared(sink, i, retries=1) for i in range(2000)])
    barrier = threading.Barrier(4)

    def report(offset: int) -> None:
        barrier.wait()
        for task_id in ids[offset::2]:  # two threads for each task: one of them is late
            if task_id % 3 == 0:
                core.ended(task_id, "was lost", lost)
            core.completed(task_id, Status.OK, RESULT)

    threads = [threading.Thread(target=report, args=(i % 2,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30.0)
    assert not any(t.is_alive() for t in threads)
    ended = sink.ended()
    assert sorted(ended) == list(range(2000))
    assert len(core) == 0
    assert all(isinstance(outcome, Delivered | WorkerLostError) for outcome in ended.values())


def test_the_time_per_call_is_measured_for_each_function_apart() -> None:
    core = TaskCore()
    sink = RecordingSink()
    slow = prepared(sink, 0)
    slow.function = b"slow"
    fast = prepared(sink, 1)
    fast.function, fast.items = b"fast", 4
    ids = core.add([slow, fast])
    assert core.item_seconds(b"slow") == Measured(None, 0)
    core.completed(ids[0], Status.OK, RESULT, elapsed=2.0)
    core.completed(ids[1], Status.OK, RESULT, elapsed=0.004)
    assert core.item_seconds(b"slow") == (pytest.approx(2.0), 1)
    assert core.item_seconds(b"fast") == (pytest.approx(0.001), 1)  # a chunk of 4 calls
    one = prepared(sink, 2)
    one.function = b"fast"
    again = core.add([one])
    core.completed(again[0], Status.OK, RESULT, elapsed=0.006)
    # The sums of seconds and calls decay by 0.8 a sample: a one-call chunk weighs a quarter
    # as much as the four-call one before it.
    assert core.item_seconds(b"fast") == (
        pytest.approx((0.8 * 0.004 + 0.006) / (0.8 * 4 + 1)),
        2,
    )
    assert core.item_seconds(b"slow") == (pytest.approx(2.0), 1)  # untouched by another function


def test_a_wait_ends_once_the_function_has_that_many_measurements() -> None:
    core = TaskCore()
    sink = RecordingSink()
    first, second = core.add([prepared(sink, 0), prepared(sink, 1)])
    # Nothing came: the wait runs out.
    assert core.item_seconds(b"function", wait=0.01, until=1) == Measured(None, 0)
    core.completed(first, Status.OK, RESULT, elapsed=1.0)
    assert core.item_seconds(b"function") == Measured(1.0, 1)
    # The report below comes once the waiter has noted what it had seen (it does so holding the
    # core's lock, which it lets go only to wait).
    entered = threading.Event()
    wait_for = core._measured_more.wait_for

    def noted_then_wait_for(predicate: Any, timeout: float | None = None) -> bool:
        entered.set()
        return wait_for(predicate, timeout)

    core._measured_more.wait_for = noted_then_wait_for  # type: ignore[method-assign]
    got: list[Measured] = []
    waiting = threading.Thread(
        target=lambda: got.append(core.item_seconds(b"function", 10.0, until=2))
    )
    waiting.start()
    assert entered.wait(10)
    core.completed(second, Status.OK, RESULT, elapsed=3.0)
    waiting.join(10)
    assert not waiting.is_alive()
    assert got == [(pytest.approx((0.8 * 1.0 + 3.0) / (0.8 + 1)), 2)]


@pytest.mark.timeout(10)
def test_measurements_that_came_before_the_wait_count() -> None:
    """A feeder waits for what the chunks it submitted measure; they may report before it
    begins to wait, and it must not then wait for more (a wait of up to 30 s here)."""
    core = TaskCore()
    sink = RecordingSink()
    ids = core.add([prepared(sink, i) for i in range(2)])
    core.completed(ids[0], Status.OK, RESULT, elapsed=1.0)
    core.completed(ids[1], Status.OK, RESULT, elapsed=1.0)
    assert core.item_seconds(b"function", wait=30.0, until=2) == (pytest.approx(1.0), 2)
