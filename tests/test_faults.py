"""Fault injection: whatever goes wrong in a worker or in pickling, procpool never hangs.

Every fault test runs under the three start methods and checks four things: the faulty task
fails with the right error (type and message), the other tasks' results arrive intact, the pool
still works afterwards, and no process is left behind once the pool is closed and joined.

Tests synchronise with running tasks through :class:`_helpers.Rendezvous` (a task reports its
worker's pid over a socket, then waits), never by sleeping; every wait is bounded.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.pool import MaybeEncodingError
from pathlib import Path
from typing import Any

import pytest

import procpool
from procpool import (
    BrokenPoolError,
    InitializerError,
    PoolTerminatedError,
    TaskDecodeError,
    TaskTimeoutError,
    WorkerLostError,
)

TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:  # workers find _helpers through sys.path (spawn copies it)
    sys.path.insert(0, TESTS_DIR)

from _helpers import (  # noqa: E402
    FailsToLoad,
    Rendezvous,
    SetstateRaises,
    Unpicklable,
    block,
    crash,
    exit_initializer,
    fail_initializer,
    identity,
    is_gone,
    raise_fails_to_load,
    raise_unpicklable,
    return_fails_to_load,
    return_unpicklable,
    run_item,
    square,
    wait_gone,
)
from _pools import WAIT, Audit, close_and_check, live_workers  # noqa: E402

# -- helpers ---------------------------------------------------------------------------------------


def drain(iterator: Any) -> list[tuple[bool, Any]]:
    """Every outcome of an imap: (True, value) or (False, exception), each wait bounded."""
    outcomes: list[tuple[bool, Any]] = []
    while True:
        try:
            outcomes.append((True, iterator.next(timeout=WAIT)))
        except StopIteration:
            return outcomes
        except procpool.TimeoutError:
            raise
        except Exception as exc:
            outcomes.append((False, exc))


def assert_still_works(pool: procpool.Pool) -> None:
    assert pool.map(square, range(12)) == [i * i for i in range(12)]
    assert pool.apply_async(square, (7,)).get(timeout=WAIT) == 49


# -- a worker dies while it holds a task -----------------------------------------------------

DEATHS = {
    # how: (exitcode, words the message must hold)
    "sigkill": (-signal.SIGKILL, "SIGKILL"),
    "sigsegv": (-signal.SIGSEGV, "SIGSEGV"),
    "exit3": (3, "exited with code 3"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", list(DEATHS))
def test_worker_death_fails_only_its_task(
    pools: Callable[..., procpool.Pool], rendezvous: Rendezvous, audit: Audit, how: str
) -> None:
    exitcode, words = DEATHS[how]
    pool = pools(2)
    workers_before = audit.note(pool)
    items: list[Any] = [0, 1, (crash, (rendezvous.address, how)), 3, 4, 5, 6, 7]
    results = pool.imap(run_item, items)  # chunksize=1: one task per item
    pid = rendezvous.accept()  # the crashing task is running, in worker `pid`
    assert pid in workers_before
    if how == "sigkill":
        os.kill(pid, signal.SIGKILL)

    outcomes = drain(results)

    assert len(outcomes) == len(items)
    ok, error = outcomes[2]
    assert not ok
    assert isinstance(error, WorkerLostError), repr(error)
    assert error.pid == pid
    assert error.exitcode == exitcode
    assert str(pid) in str(error)
    assert words in str(error)
    # Every other item succeeded, in order.
    assert [o for i, o in enumerate(outcomes) if i != 2] == [
        (True, i * i) for i in range(len(items)) if i != 2
    ]
    # The pool goes on, and has replaced the dead worker.
    assert_still_works(pool)
    workers_after = live_workers(pool, audit)
    assert len(workers_after) == 2
    assert pid not in workers_after
    assert workers_after != workers_before
    close_and_check(pool, audit)


@pytest.mark.timeout(60)
def test_worker_death_with_apply_async(
    pools: Callable[..., procpool.Pool], rendezvous: Rendezvous, audit: Audit
) -> None:
    pool = pools(2)
    audit.note(pool)
    before = [pool.apply_async(square, (i,)) for i in range(3)]
    doomed = pool.apply_async(crash, (rendezvous.address, "sigkill"))
    after = [pool.apply_async(square, (i,)) for i in range(3, 6)]
    pid = rendezvous.accept()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerLostError, match=rf"\b{pid}\b.*SIGKILL") as info:
        doomed.get(timeout=WAIT)
    assert info.value.pid == pid
    assert [r.get(timeout=WAIT) for r in before + after] == [i * i for i in range(6)]
    assert_still_works(pool)
    assert pid not in live_workers(pool, audit)
    assert len(live_workers(pool, audit)) == 2
    close_and_check(pool, audit)


@pytest.mark.timeout(60)
def test_idle_workers_killed_lose_no_task(
    pools: Callable[..., procpool.Pool], audit: Audit
) -> None:
    """Workers killed while idle (the OOM killer's pick, say) are replaced, and tasks submitted
    after their death run: they never reached a dead worker, so they must not fail as if they
    had died with it. (The race this checks is one the scheduler wins most of the time, hence
    several rounds.)"""
    pool = pools(2)
    for _ in range(12):
        assert pool.map(square, range(4)) == [0, 1, 4, 9]
        pids = {pid for pid in audit.note(pool) if not is_gone(pid)}
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        assert not wait_gone(pids, timeout=WAIT)
        results = [pool.apply_async(square, (i,)) for i in range(4)]
        outcomes = []
        for result in results:
            try:
                outcomes.append(result.get(timeout=WAIT))
            except WorkerLostError as exc:
                outcomes.append(exc)
        assert outcomes == [0, 1, 4, 9]
    assert_still_works(pool)
    assert len(live_workers(pool, audit)) == 2
    close_and_check(pool, audit)


# -- scheduling: no task waits behind a busy worker while another worker is idle -----------------


@pytest.mark.timeout(60)
def test_an_idle_worker_is_not_left_idle_behind_a_busy_one(
    pools: Callable[..., procpool.Pool], audit: Audit
) -> None:
    """With two workers and one long task, the other tasks run on the other worker.

    ``multiprocessing.Pool`` guarantees it (an idle worker takes the next task), and code relies
    on it: two tasks that wait for each other deadlock if one waits behind the other. Whichever
    worker becomes ready first, one of ``quick`` and ``second`` is in that position here.
    """
    pool = pools(2)
    workers = audit.note(pool)
    with Rendezvous(timeout=10) as gate:
        first = pool.apply_async(block, (gate.address, "first"))
        quick = pool.apply_async(square, (4,))
        second = pool.apply_async(block, (gate.address, "second"))
        first_pid = gate.accept()
        # `first` blocks until released below: neither task may wait for it. (A failure here
        # is a TimeoutError: the task sat behind `first` while the other worker was idle.)
        assert quick.get(timeout=10) == 16
        second_pid = gate.accept()
        assert {first_pid, second_pid} == workers  # `second` runs beside `first`
        gate.release_all()
        assert first.get(timeout=WAIT) == "first"
        assert second.get(timeout=WAIT) == "second"
    close_and_check(pool, audit)


# -- initializers ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_initializer_that_raises_breaks_the_pool(
    pools: Callable[..., procpool.Pool], audit: Audit
) -> None:
    pool = pools(2, initializer=fail_initializer, initargs=("bad configuration",))
    audit.note(pool)
    result = pool.apply_async(square, (3,))
    with pytest.raises(InitializerError) as info:
        result.get(timeout=WAIT)  # promptly: the bound turns a hang into a TimeoutError
    error = info.value
    assert isinstance(error, BrokenPoolError)
    assert isinstance(error.__cause__, ValueError)
    assert str(error.__cause__) == "bad configuration"
    assert "ValueError" in str(error)
    assert "bad configuration" in str(error)
    # Whatever comes later fails the same way, at once, rather than waiting for a worker.
    with pytest.raises(InitializerError):
        pool.map_async(square, range(4)).get(timeout=WAIT)
    with pytest.raises(InitializerError):
        pool.apply_async(square, (1,)).get(timeout=WAIT)
    close_and_check(pool, audit)


@pytest.mark.timeout(60)
def test_initializer_that_exits_breaks_the_pool(
    pools: Callable[..., procpool.Pool], audit: Audit
) -> None:
    pool = pools(2, initializer=exit_initializer, initargs=(1,))
    audit.note(pool)
    result = pool.apply_async(square, (3,))
    with pytest.raises(InitializerError, match="exited with code 1") as info:
        result.get(timeout=WAIT)
    assert "before they are ready" in str(info.value)
    with pytest.raises(InitializerError):
        pool.apply_async(square, (1,)).get(timeout=WAIT)
    close_and_check(pool, audit)


# -- pickling faults ---------------------------------------------------------------------------

SERIALIZATION_FAULTS: dict[str, tuple[Callable[..., Any], tuple[Any, ...], type, list[str]]] = {
    # name: (function, arguments, expected error, fragments its message must hold)
    "argument-cannot-pickle": (
        identity,
        (Unpicklable(),),
        TypeError,
        ["cannot pickle 'Unpicklable' object"],
    ),
    "argument-setstate-raises": (
        identity,
        (SetstateRaises(),),
        TaskDecodeError,
        ["could not be unpickled in the worker", "RuntimeError", "SetstateRaises"],
    ),
    "argument-reduce-callable-raises": (
        identity,
        (FailsToLoad("argument"),),
        TaskDecodeError,
        ["could not be unpickled in the worker", "refusing to unpickle the argument"],
    ),
    "result-cannot-pickle": (
        return_unpicklable,
        (),
        MaybeEncodingError,
        ["Error sending result", "lock"],
    ),
    "exception-cannot-pickle": (
        raise_unpicklable,
        (),
        MaybeEncodingError,
        ["Error sending result", "an exception holding a lock"],
    ),
    "result-fails-to-unpickle": (
        return_fails_to_load,
        (),
        TaskDecodeError,
        ["result could not be unpickled", "refusing to unpickle the result"],
    ),
    "exception-fails-to-unpickle": (
        raise_fails_to_load,
        (),
        TaskDecodeError,
        ["TwoArgError", "first/second", "could not be unpickled in the parent"],
    ),
}


def check_error(error: BaseException, expected: type, fragments: list[str]) -> None:
    assert isinstance(error, expected), repr(error)
    for fragment in fragments:
        assert fragment in str(error), f"{fragment!r} not in {str(error)!r}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", list(SERIALIZATION_FAULTS))
def test_pickling_fault_with_apply_async(
    pools: Callable[..., procpool.Pool], audit: Audit, fault: str
) -> None:
    func, args, expected, fragments = SERIALIZATION_FAULTS[fault]
    pool = pools(2)
    workers = audit.note(pool)
    before = [pool.apply_async(square, (i,)) for i in range(3)]
    bad = pool.apply_async(func, args)
    after = [pool.apply_async(square, (i,)) for i in range(3, 6)]
    with pytest.raises(Exception) as info:  # noqa: PT011 - checked precisely just below
        bad.get(timeout=WAIT)
    check_error(info.value, expected, fragments)
    assert not bad.successful()
    assert [r.get(timeout=WAIT) for r in before + after] == [i * i for i in range(6)]
    assert_still_works(pool)
    assert audit.note(pool) == workers  # a pickling fault costs no worker
    close_and_check(pool, audit)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", list(SERIALIZATION_FAULTS))
def test_pickling_fault_in_imap(
    pools: Callable[..., procpool.Pool], audit: Audit, fault: str
) -> None:
    """As in ``multiprocessing.Pool``, one bad item fails only itself; the items after it run."""
    func, args, expected, fragments = SERIALIZATION_FAULTS[fault]
    pool = pools(2)
    workers = audit.note(pool)
    items: list[Any] = [0, 1, (func, args), 3, 4, 5]
    outcomes = drain(pool.imap(run_item, items))
    assert len(outcomes) == len(items), outcomes
    ok, error = outcomes[2]
    assert not ok
    check_error(error, expected, fragments)
    assert [o for i, o in enumerate(outcomes) if i != 2] == [(True, i * i) for i in (0, 1, 3, 4, 5)]
    assert_still_works(pool)
    assert audit.note(pool) == workers
    close_and_check(pool, audit)


# -- terminate, close, and the parent's death ----------------------------------------------------


@pytest.mark.timeout(60)
def test_terminate_fails_every_pending_result(
    pools: Callable[..., procpool.Pool], rendezvous: Rendezvous, audit: Audit
) -> None:
    pool = pools(2)
    workers = audit.note(pool)
    # Three blocking tasks, so that both workers end up running one whichever worker a task is
    # sent to first (see test_an_idle_worker_is_not_left_idle_behind_a_busy_one).
    running = [pool.apply_async(block, (rendezvous.address, i)) for i in range(3)]
    assert {rendezvous.accept(), rendezvous.accept()} == workers  # both workers are busy
    queued = [pool.apply_async(square, (i,)) for i in range(3)]
    mapped = pool.map_async(square, range(6))
    lazy = pool.imap(square, range(6))

    # A thread blocked in get() must come back.
    waiting = threading.Event()
    seen: list[BaseException] = []

    def waiter() -> None:
        waiting.set()
        try:
            running[0].get(timeout=WAIT)
        except BaseException as exc:
            seen.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    waiting.wait(WAIT)

    started = time.monotonic()
    pool.terminate()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert len(seen) == 1
    assert isinstance(seen[0], PoolTerminatedError), repr(seen[0])
    for result in [*running, *queued, mapped]:
        with pytest.raises(PoolTerminatedError):
            result.get(timeout=WAIT)
    with pytest.raises(PoolTerminatedError):
        lazy.next(timeout=WAIT)
    assert time.monotonic() - started < WAIT / 2  # promptly, not after some timeout
    pool.join()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply_async(square, (1,))
    assert pool._pool == []
    audit.check()


@pytest.mark.timeout(60)
def test_close_and_join_leave_no_worker(pools: Callable[..., procpool.Pool], audit: Audit) -> None:
    pool = pools(2)
    audit.note(pool)
    result = pool.map_async(square, range(40), chunksize=3)
    close_and_check(pool, audit)
    assert result.get(timeout=0) == [i * i for i in range(40)]


# The parent of the pool, run in a subprocess: it starts tasks that block, prints its workers'
# pids, and waits for results that never come (the test kills it).
PARENT_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
import procpool
from _helpers import block

method, address = sys.argv[2], "\\0" + sys.argv[3]  # abstract socket: argv cannot hold NUL
pool = procpool.Pool(2, context=procpool.get_context(method))
# Three tasks: both workers run one, whichever worker each is sent to.
results = [pool.apply_async(block, (address,)) for _ in range(3)]
print(" ".join(str(p.pid) for p in pool._pool), flush=True)
for result in results:
    result.get()
"""


@pytest.mark.timeout(60)
def test_workers_exit_when_the_parent_is_killed(
    method: str, rendezvous: Rendezvous, tmp_path: Path
) -> None:
    with (
        (tmp_path / "stderr").open("w+") as stderr,
        subprocess.Popen(
            [sys.executable, "-c", PARENT_SCRIPT, TESTS_DIR, method, rendezvous.address[1:]],
            stdout=subprocess.PIPE,
            stderr=stderr,
        ) as parent,
    ):
        try:
            assert parent.stdout is not None
            ready, _, _ = select.select([parent.stdout], [], [], WAIT)
            assert ready, "the parent printed no worker pids"
            line = parent.stdout.readline().decode()
            workers = {int(pid) for pid in line.split()}
            if len(workers) != 2:
                stderr.seek(0)
                pytest.fail(f"the parent printed {line!r}; its stderr: {stderr.read()}")
            # Both workers are running a task now.
            assert {rendezvous.accept(), rendezvous.accept()} == workers
            os.kill(parent.pid, signal.SIGKILL)
            assert parent.wait(WAIT) == -signal.SIGKILL
            # The workers notice the parent's death at once (a lifeline pipe reaches EOF).
            alive = wait_gone(workers, timeout=5.0)
            assert not alive, f"workers {sorted(alive)} outlived their parent"
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()


# -- task timeouts -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_task_timeout_kills_only_the_late_task(
    pools: Callable[..., procpool.Pool], rendezvous: Rendezvous, audit: Audit
) -> None:
    pool = pools(2, task_timeout=0.5)
    workers = audit.note(pool)
    before = [pool.apply_async(square, (i,)) for i in range(3)]
    stuck = pool.apply_async(block, (rendezvous.address,))
    after = [pool.apply_async(square, (i,)) for i in range(3, 6)]
    pid = rendezvous.accept()
    assert pid in workers
    started = time.monotonic()
    with pytest.raises(TaskTimeoutError) as info:
        stuck.get(timeout=WAIT)
    assert time.monotonic() - started < 10
    assert isinstance(info.value, TimeoutError)
    assert str(pid) in str(info.value)
    assert "0.5 s timeout" in str(info.value)
    assert [r.get(timeout=WAIT) for r in before + after] == [i * i for i in range(6)]
    assert_still_works(pool)
    # The killed worker is reaped when its exit is seen, which may come after the results
    # of the other workers; once it is gone, the pool's live workers are back to two.
    assert not wait_gone({pid}, timeout=WAIT)
    workers_after = live_workers(pool, audit)
    assert pid not in workers_after
    assert len(workers_after) == 2
    close_and_check(pool, audit)
