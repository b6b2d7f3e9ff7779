"""Fault tolerance: per-call timeouts, retries, return_exceptions, cancellation, the memory cap,
Ctrl-C and signals to the parent, and no leaks (descriptors, zombies, resource tracker).

Every test that involves processes runs under the three start methods. Tests synchronise with
running tasks through :class:`_helpers.Rendezvous` (a task reports its worker's pid over a socket,
then waits) or by reading a subprocess's output, never by sleeping; every wait is bounded. Task
functions whose later attempts behave differently keep their record in files (module globals
differ per process): they live in ``_fault_tolerance_tasks``, which workers import cheaply.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import procpool
from procpool import (
    PoolTerminatedError,
    ProcpoolError,
    TaskCancelledError,
    TaskTimeoutError,
    WorkerLostError,
)
from procpool.pool import RemoteTraceback

TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:  # workers find the helpers through sys.path (spawn copies it)
    sys.path.insert(0, TESTS_DIR)

from _fault_tolerance_tasks import (  # noqa: E402
    attempt_pids,
    block_first_time,
    die_always,
    die_first_time,
    dies_when_returned,
    exit_every,
    getpid,
    hoard,
    kill_self,
    outcome,
    outcome_item,
    raise_until,
    raise_value_error,
    touch,
    touch_then_block,
)
from _helpers import (  # noqa: E402
    Rendezvous,
    block,
    is_gone,
    run_item,
    square,
    wait_gone,
)
from _pools import WAIT, Audit, close_and_check, live_workers  # noqa: E402

MIB = 2**20


# -- helpers ----------------------------------------------------------------------------------


def assert_still_works(pool: procpool.Pool) -> None:
    assert pool.map_async(square, range(12)).get(timeout=WAIT) == [i * i for i in range(12)]
    assert pool.apply_async(square, (7,)).get(timeout=WAIT) == 49


def run(pool: procpool.Pool, func: Callable[..., Any], *args: Any, **options: Any) -> Any:
    """``pool.apply(func, args, **options)``, its wait bounded."""
    return pool.apply_async(func, args, **options).get(timeout=WAIT)


def drain(iterator: Any) -> list[Any]:
    """Every item of an imap, each wait bounded (a hang fails as multiprocessing.TimeoutError)."""
    items = []
    while True:
        try:
            items.append(iterator.next(timeout=WAIT))
        except StopIteration:
            return items


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def earlier_attempts(error: BaseException) -> list[str]:
    """The attempt lines of the note procpool adds to a task's final error."""
    notes = getattr(error, "__notes__", [])
    assert len(notes) == 1, notes
    header, *lines = notes[0].splitlines()
    assert header == "procpool: earlier attempts at this task failed:"
    for number, line in enumerate(lines, 1):
        assert line.startswith(f"  attempt {number}: "), line
    return lines


def pid_in(text: str) -> int:
    match = re.search(r"worker process (\d+)", text)
    assert match, text
    return int(match[1])


# -- 1. per-call timeouts ------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_timeout_kills_only_the_late_task(
    pools: Callable[..., procpool.Pool], rendezvous: Rendezvous, audit: Audit
) -> None:
    pool = pools(2)
    workers = audit.note(pool)
    other = pool.apply_async(block, (rendezvous.address, "other"))  # no timeout
    other_pid = rendezvous.accept()
    submitted = time.monotonic()
    late = pool.apply_async(block, (rendezvous.address, "late"), timeout=0.5)
    late_pid = rendezvous.accept()
    assert {other_pid, late_pid} == workers
    queued = [pool.apply_async(square, (i,)) for i in range(4)]  # wait for a free worker

    with pytest.raises(TaskTimeoutError) as info:
        late.get(timeout=WAIT)
    elapsed = time.monotonic() - submitted
    assert 0.5 <= elapsed < 10, elapsed  # not before its deadline, and well before the bound
    error = info.value
    assert isinstance(error, TimeoutError)  # the builtin, as the docs promise
    assert isinstance(error, ProcpoolError)
    assert f"worker process {late_pid}" in str(error)
    assert "0.5 s timeout" in str(error)

    # The tasks queued behind it run (on the replacement); the other worker's task is untouched.
    assert [r.get(timeout=WAIT) for r in queued] == [0, 1, 4, 9]
    assert not wait_gone({late_pid}, timeout=WAIT)
    assert not other.ready()
    assert not is_gone(other_pid)
    rendezvous.release_all()
    assert other.get(timeout=WAIT) == "other"
    assert_still_works(pool)
    workers_after = live_workers(pool, audit)
    assert len(workers_after) == 2
    assert other_pid in workers_after
    assert late_pid not in workers_after
    close_and_check(pool, audit)


@pytest.mark.timeout(60)
def test_a_map_does_not_wait_behind_a_blocked_task(
    pools: Callable[..., procpool.Pool], rendezvous: Rendezvous, audit: Audit
) -> None:
    """One worker runs a task that blocks; the other is free, so a map completes on it, as in
    multiprocessing.Pool, where a worker takes a task only once it is free. (procpool sends a
    map chunk ahead to the busy worker, where it waits behind the blocked task.) Every "the pool
    still works" check made while another task runs is in this position."""
    pool = pools(2)
    audit.note(pool)
    blocked = pool.apply_async(block, (rendezvous.address, "blocked"))
    rendezvous.accept()
    try:
        mapped = pool.map_async(square, range(12))
        assert mapped.get(timeout=3) == [i * i for i in range(12)]
    finally:
        rendezvous.release_all()
    assert blocked.get(timeout=WAIT) == "blocked"
    close_and_check(pool, audit)


@pytest.mark.timeout(60)
def test_timeout_applies_to_each_item_of_a_map(
    pools: Callable[..., procpool.Pool], rendezvous: Rendezvous, audit: Audit
) -> None:
    """With a timeout, map(chunksize=None) sends each item as a task of its own: the item that
    runs late fails alone, although without the timeout these 40 items travel in chunks of 5."""
    pool = pools(2)
    audit.note(pool)
    items: list[Any] = list(range(40))
    items[7] = (block, (rendezvous.address,))
    result = pool.map_async(run_item, items, timeout=1.0, return_exceptions=True)
    pid = rendezvous.accept()
    values = result.get(timeout=WAIT)
    assert isinstance(values[7], TaskTimeoutError), values[7]
    assert f"worker process {pid}" in str(values[7])
    assert [v for i, v in enumerate(values) if i != 7] == [i * i for i in range(40) if i != 7]

    # Without return_exceptions the map fails with the item's timeout.
    items = [0, 1, (block, (rendezvous.address,)), 3]
    started = time.monotonic()
    with pytest.raises(TaskTimeoutError, match=r"0\.5 s timeout"):
        pool.map(run_item, items, timeout=0.5)
    assert time.monotonic() - started < 10
    assert_still_works(pool)
    close_and_check(pool, audit)


@pytest.mark.timeout(60)
def test_timeout_needs_one_item_per_task(pools: Callable[..., procpool.Pool]) -> None:
    pool = pools(1)
    pairs = [(i, i) for i in range(10)]
    calls: list[Callable[[], Any]] = [
        lambda: pool.map(square, range(10), chunksize=5, timeout=5),
        lambda: pool.map_async(square, range(10), chunksize=5, timeout=5),
        lambda: pool.starmap(pow, pairs, chunksize=5, timeout=5),
        lambda: pool.starmap_async(pow, pairs, chunksize=5, timeout=5),
        lambda: pool.imap(square, range(10), chunksize=5, timeout=5),
        lambda: pool.imap_unordered(square, range(10), chunksize=5, timeout=5),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="chunksize must be 1"):
            call()
    expected = [i * i for i in range(10)]
    assert pool.map_async(square, range(10), chunksize=1, timeout=5).get(timeout=WAIT) == expected
    assert pool.map_async(square, range(10), timeout=5).get(timeout=WAIT) == expected
    assert drain(pool.imap(square, range(10), timeout=5)) == expected
    assert sorted(drain(pool.imap_unordered(square, range(10), timeout=5))) == expected


@pytest.mark.timeout(60)
def test_pool_task_timeout_is_overridden_per_call(
    pools: Callable[..., procpool.Pool], rendezvous: Rendezvous, audit: Audit
) -> None:
    """``Options.override`` replaces the pool's value by the call's, None included: timeout=None
    runs the call without a deadline, a longer or shorter timeout replaces the pool's."""
    pool = pools(2, task_timeout=0.5)
    audit.note(pool)
    expected = [i * i for i in range(10)]
    # The pool-wide timeout forbids chunks too; lifting it for the call allows them again.
    with pytest.raises(ValueError, match="chunksize must be 1"):
        pool.map(square, range(10), chunksize=5)
    mapped = pool.map_async(square, range(10), chunksize=5, timeout=None)
    assert mapped.get(timeout=WAIT) == expected

    for exempt_timeout in (None, 60):
        # The exempt task starts first; the one under the pool's timeout starts after it and
        # times out, so by then the exempt task has run past the pool's timeout too.
        exempt = pool.apply_async(block, (rendezvous.address, "exempt"), timeout=exempt_timeout)
        exempt_pid = rendezvous.accept()
        default = pool.apply_async(block, (rendezvous.address, "default"))
        rendezvous.accept()
        with pytest.raises(TaskTimeoutError, match=r"0\.5 s timeout"):
            default.get(timeout=WAIT)
        assert not exempt.ready()
        assert not is_gone(exempt_pid)
        rendezvous.release_all()
        assert exempt.get(timeout=WAIT) == "exempt"

    # A shorter timeout for one call.
    shorter = pool.apply_async(block, (rendezvous.address, "shorter"), timeout=0.2)
    rendezvous.accept()
    with pytest.raises(TaskTimeoutError, match=r"0\.2 s timeout"):
        shorter.get(timeout=WAIT)
    assert_still_works(pool)
    close_and_check(pool, audit)


@pytest.mark.timeout(60)
def test_long_timeouts_do_not_break_the_pool(pools: Callable[..., procpool.Pool]) -> None:
    """A timeout of a month (past epoll's 2**31 ms) is a timeout like any other, and infinity,
    which the validation accepts, must either be refused or mean no deadline: neither may break
    the pool (procpool's scheduler fails with OverflowError today)."""
    pool = pools(1)
    assert run(pool, square, 7, timeout=31 * 86400) == 49
    try:
        result = pool.apply_async(square, (7,), timeout=float("inf"))
    except ValueError:
        pass
    else:
        assert result.get(timeout=WAIT) == 49
    assert_still_works(pool)


@pytest.mark.timeout(60)
def test_options_are_validated(pools: Callable[..., procpool.Pool]) -> None:
    pool = pools(1)
    bad: list[tuple[dict[str, Any], type[Exception]]] = [
        ({"timeout": 0}, ValueError),
        ({"timeout": -1}, ValueError),
        ({"timeout": float("nan")}, ValueError),
        ({"retries": -1}, ValueError),
        ({"retries": 1.5}, ValueError),
        ({"retries": True}, ValueError),
        ({"retry_on": 42}, TypeError),
        ({"retry_on": (ConnectionError, "KeyError")}, TypeError),
        ({"retry": 1}, TypeError),  # a misspelt option
    ]
    for options, error in bad:
        with pytest.raises(error):
            pool.apply_async(square, (3,), **options)
        with pytest.raises(error):
            pool.map_async(square, range(3), **options)
    # return_exceptions is an option of the map family only: apply has no items to put
    # exceptions in place of. (procpool accepts it and returns the worker's internal
    # per-item records instead of the result.)
    with pytest.raises(TypeError):
        pool.apply_async(square, (3,), return_exceptions=True)  # type: ignore[call-arg]
    assert_still_works(pool)


# -- 2. retries ------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_retry_after_worker_loss(
    pools: Callable[..., procpool.Pool], tmp_path: Path, audit: Audit
) -> None:
    pool = pools(2)
    audit.note(pool)
    marker = tmp_path / "apply"
    pid, value = run(pool, die_first_time, str(marker), "value", retries=1)
    first_pid = int(marker.read_text())  # the worker the first attempt killed
    assert value == "value"
    assert pid != first_pid
    assert not wait_gone({first_pid}, timeout=WAIT)

    # In a map, the chunk whose item killed its worker runs again (chunk [die, 3] here).
    marker = tmp_path / "map"
    items: list[Any] = [0, 1, (die_first_time, (str(marker), "x")), 3]
    results = pool.map_async(run_item, items, chunksize=2, retries=1).get(timeout=WAIT)
    assert results[:2] == [0, 1]
    assert results[2][1] == "x"
    assert results[2][0] != int(marker.read_text())
    assert results[3] == 9
    assert_still_works(pool)
    close_and_check(pool, audit)


@pytest.mark.timeout(60)
def test_a_task_retried_after_close_gets_a_worker(
    pools: Callable[..., procpool.Pool], tmp_path: Path, audit: Audit
) -> None:
    # The only worker dies with the last task after close(): the retry needs a new worker.
    pool = pools(1, retries=1)
    audit.note(pool)
    marker = tmp_path / "closed"
    result = pool.apply_async(die_first_time, (str(marker), "again"))
    pool.close()
    pid, value = result.get(timeout=WAIT)
    assert value == "again"
    assert pid != int(marker.read_text())
    pool.join()
    audit.check()


@pytest.mark.timeout(60)
def test_pool_retries_are_overridden_per_call(
    pools: Callable[..., procpool.Pool], tmp_path: Path, audit: Audit
) -> None:
    pool = pools(2, retries=1)
    audit.note(pool)
    pid, _ = run(pool, die_first_time, str(tmp_path / "default"))  # the pool's retries=1
    assert pid != int((tmp_path / "default").read_text())
    with pytest.raises(WorkerLostError) as info:
        run(pool, die_first_time, str(tmp_path / "none"), retries=0)
    assert info.value.pid == int((tmp_path / "none").read_text())
    assert not hasattr(info.value, "__notes__")  # a single attempt
    close_and_check(pool, audit)


@pytest.mark.timeout(60)
def test_a_task_that_always_kills_its_worker_fails_after_every_attempt(
    pools: Callable[..., procpool.Pool], tmp_path: Path, audit: Audit
) -> None:
    pool = pools(2)
    audit.note(pool)
    with pytest.raises(WorkerLostError) as info:
        run(pool, die_always, str(tmp_path), retries=2)
    error = info.value
    pids = attempt_pids(str(tmp_path))
    assert len(pids) == 3  # retries + 1 attempts
    assert len(set(pids)) == 3  # each in a worker of its own
    assert error.pid == pids[-1]
    assert error.exitcode == -signal.SIGKILL
    assert f"worker process {pids[-1]}" in str(error)
    assert "possibly the out-of-memory killer" in str(error)
    lines = earlier_attempts(error)
    assert [pid_in(line) for line in lines] == pids[:2]
    for line in lines:
        assert "killed with SIGKILL" in line, line
    assert not wait_gone(set(pids), timeout=WAIT)
    assert_still_works(pool)
    close_and_check(pool, audit)


@pytest.mark.timeout(60)
def test_retry_on_exceptions(
    pools: Callable[..., procpool.Pool], tmp_path: Path, audit: Audit
) -> None:
    pool = pools(2)
    audit.note(pool)

    def directory(name: str) -> str:
        path = tmp_path / name
        path.mkdir()
        return str(path)

    # ConnectionError on attempts 1 and 2; the third succeeds.
    flaky = directory("flaky")
    assert run(pool, raise_until, flaky, 2, retries=2, retry_on=ConnectionError) == 3
    assert len(attempt_pids(flaky)) == 3

    # Another exception is not retried (retry_on takes a tuple too).
    other = directory("other")
    with pytest.raises(ValueError, match="not worth a retry") as info:
        run(pool, raise_value_error, other, retries=3, retry_on=(ConnectionError, KeyError))
    assert info.value.args == ("not worth a retry", 1)
    assert len(attempt_pids(other)) == 1
    assert not hasattr(info.value, "__notes__")

    # Without retry_on, retries are for lost workers and timeouts only.
    unlisted = directory("unlisted")
    with pytest.raises(ConnectionError):
        run(pool, raise_until, unlisted, 1, retries=3)
    assert len(attempt_pids(unlisted)) == 1

    # The retries run out: the last attempt's exception, noting the earlier ones.
    hopeless = directory("hopeless")
    with pytest.raises(ConnectionError) as info:
        run(pool, raise_until, hopeless, 5, retries=1, retry_on=ConnectionError)
    assert info.value.args == ("connection refused", 2)
    [line] = earlier_attempts(info.value)
    assert "raised ConnectionError" in line
    assert pid_in(line) == attempt_pids(hopeless)[0]

    # The map family: each item is retried (chunksize=1)...
    dirs = [directory(f"item{i}") for i in range(4)]
    assert pool.starmap_async(
        raise_until, [(d, 1) for d in dirs], chunksize=1, retries=1, retry_on=ConnectionError
    ).get(timeout=WAIT) == [2, 2, 2, 2]
    # ...and with return_exceptions a chunk with a retryable item runs again as a whole.
    dirs = [directory(f"chunked{i}") for i in range(4)]
    assert pool.starmap_async(
        raise_until,
        [(d, 1) for d in dirs],
        chunksize=2,
        retries=1,
        retry_on=ConnectionError,
        return_exceptions=True,
    ).get(timeout=WAIT) == [2, 2, 2, 2]
    assert_still_works(pool)
    close_and_check(pool, audit)


@pytest.mark.timeout(60)
def test_exceptions_in_place_after_retries_note_the_attempts(
    pools: Callable[..., procpool.Pool], tmp_path: Path
) -> None:
    """With return_exceptions, an item whose retries ran out yields its last exception, which
    (as every final error after retries) notes the earlier attempts."""
    pool = pools(1)
    [error] = pool.starmap_async(
        raise_until,
        [(str(tmp_path), 5)],
        retries=1,
        retry_on=ConnectionError,
        return_exceptions=True,
    ).get(timeout=WAIT)
    assert isinstance(error, ConnectionError)
    assert error.args == ("connection refused", 2)
    [line] = earlier_attempts(error)
    assert "raised" in line
    assert pid_in(line) == attempt_pids(str(tmp_path))[0]


@pytest.mark.timeout(60)
def test_timeout_with_retries(
    pools: Callable[..., procpool.Pool], rendezvous: Rendezvous, tmp_path: Path, audit: Audit
) -> None:
    pool = pools(2)
    audit.note(pool)
    # Late on its first attempt only: the second attempt, in a new worker, returns.
    result = pool.apply_async(
        block_first_time, (str(tmp_path / "late"), rendezvous.address), timeout=0.3, retries=1
    )
    first_pid = rendezvous.accept()
    second_pid = result.get(timeout=WAIT)
    assert second_pid != first_pid
    assert not wait_gone({first_pid}, timeout=WAIT)

    # Late every time: both attempts time out, each killing its worker.
    always = pool.apply_async(block, (rendezvous.address,), timeout=0.3, retries=1)
    pids = [rendezvous.accept(), rendezvous.accept()]
    with pytest.raises(TaskTimeoutError) as info:
        always.get(timeout=WAIT)
    assert f"worker process {pids[1]}" in str(info.value)
    [line] = earlier_attempts(info.value)
    assert f"ran past its 0.3 s timeout in worker process {pids[0]}, which was killed" in line
    assert not wait_gone(set(pids), timeout=WAIT)
    assert_still_works(pool)
    close_and_check(pool, audit)


# -- 3. return_exceptions --------------------------------------------------------------------------

KINDS = ["ok", "value", "ok", "key", "die", "ok", "ok", "value"]


def describe(value: Any) -> tuple[Any, ...]:
    """A comparable summary of one result (imap_unordered's come in any order)."""
    if isinstance(value, WorkerLostError):
        return ("lost", value.pid, value.exitcode)
    if isinstance(value, BaseException):
        return (type(value).__name__, *value.args)
    return ("ok", value)


def expected_outcome(index: int, kind: str, died: int) -> tuple[Any, ...]:
    if kind == "value":
        return ("ValueError", "bad item", index)
    if kind == "key":
        return ("KeyError", index)
    if kind == "die":
        return ("lost", died, -signal.SIGKILL)
    return ("ok", index * index)


def check_items(results: list[Any], marker: str, api: str, chunk: int | None = None) -> int:
    """Each item's outcome is what its kind in KINDS says (the "die" item lost alone); with
    ``chunk``, that item's loss names its place in a chunk of that many items. Returns the pid
    of the worker that died."""
    died = int(Path(marker).read_text())
    expected = [expected_outcome(i, kind, died) for i, kind in enumerate(KINDS)]
    if api == "imap_unordered":
        assert Counter(map(describe, results)) == Counter(expected)
    else:
        assert [describe(r) for r in results] == expected
    if chunk is not None:
        [lost] = [r for r in results if isinstance(r, WorkerLostError)]
        assert f"(item {KINDS.index('die')} of a chunk of {chunk})" in str(lost)
    return died


def run_in_place(pool: procpool.Pool, api: str, items: list[Any], chunksize: int) -> list[Any]:
    if api == "map":
        return pool.map_async(outcome_item, items, chunksize=chunksize, return_exceptions=True).get(
            timeout=WAIT
        )
    if api == "starmap":
        return pool.starmap_async(outcome, items, chunksize=chunksize, return_exceptions=True).get(
            timeout=WAIT
        )
    lazy = getattr(pool, api)(outcome_item, items, chunksize=chunksize, return_exceptions=True)
    return drain(lazy)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("api", ["map", "starmap", "imap", "imap_unordered"])
def test_return_exceptions_in_place(
    pools: Callable[..., procpool.Pool], tmp_path: Path, audit: Audit, api: str
) -> None:
    pool = pools(2)
    audit.note(pool)
    marker = str(tmp_path / "died")
    items = [(i, kind, marker) for i, kind in enumerate(KINDS)]
    results = run_in_place(pool, api, items, chunksize=1)
    died = check_items(results, marker, api)
    for result in results:
        if isinstance(result, ValueError | KeyError):
            # The worker's traceback is attached, as for a raised exception.
            assert isinstance(result.__cause__, RemoteTraceback)
        elif isinstance(result, WorkerLostError):
            assert f"worker process {died}" in str(result)
    assert not wait_gone({died}, timeout=WAIT)

    # Exceptions raised by items come back in place inside chunks too.
    alive = [(i, kind, "") for i, kind in enumerate(KINDS) if kind != "die"]
    results = run_in_place(pool, api, alive, chunksize=3)
    expected = [expected_outcome(i, kind, 0) for i, kind, _ in alive]
    if api == "imap_unordered":
        assert Counter(map(describe, results)) == Counter(expected)
    else:
        assert [describe(r) for r in results] == expected
    assert_still_works(pool)
    close_and_check(pool, audit)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("api", ["map", "starmap", "imap", "imap_unordered"])
def test_a_lost_worker_fails_only_the_item_it_was_calling_in_a_chunk(
    pools: Callable[..., procpool.Pool], tmp_path: Path, audit: Audit, api: str
) -> None:
    """Items that fail alone may travel several to a task: a worker killed while calling one
    of them fails that item alone; the chunk runs again for the others, without it."""
    pool = pools(2)
    audit.note(pool)
    marker = str(tmp_path / "died")
    items = [(i, kind, marker) for i, kind in enumerate(KINDS)]
    results = run_in_place(pool, api, items, chunksize=len(items))  # one chunk holds them all
    died = check_items(results, marker, api, chunk=len(items))
    assert not wait_gone({died}, timeout=WAIT)
    assert_still_works(pool)
    close_and_check(pool, audit)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chunksize", [None, 1])
@pytest.mark.parametrize("api", ["imap", "imap_unordered"])
def test_imap_items_fail_alone_as_with_one_item_chunks(
    pools: Callable[..., procpool.Pool],
    tmp_path: Path,
    audit: Audit,
    api: str,
    chunksize: int | None,
) -> None:
    """As with the standard library's one-item chunks, an item that raises or kills its worker
    raises at its turn and the iteration goes on, though procpool groups the items into tasks
    (after the warm-up, the function's time per call is known: one task carries them all)."""
    pool = pools(2)
    audit.note(pool)
    warm_up = [(i, "ok", "") for i in range(50)]
    assert drain(getattr(pool, api)(outcome_item, warm_up, chunksize=chunksize))
    marker = str(tmp_path / "died")
    items = [(i, kind, marker) for i, kind in enumerate(KINDS)]
    iterator = getattr(pool, api)(outcome_item, items, chunksize=chunksize)
    results = []
    for _ in items:
        try:
            results.append(iterator.next(timeout=WAIT))
        except (ValueError, KeyError, WorkerLostError) as exc:
            results.append(exc)
    with pytest.raises(StopIteration):
        iterator.next(timeout=WAIT)
    check_items(results, marker, api, chunk=len(items))
    assert_still_works(pool)
    close_and_check(pool, audit)


@pytest.mark.timeout(120)
def test_many_lost_workers_in_one_map_fail_only_their_items(audit: Audit) -> None:
    """Twenty deaths a map, workers replaced while others report: exactly the items that
    killed a worker fail. (A report sent just before a death was once dropped when a send to
    the dying worker failed before its exit was seen: its task then failed as lost. Whether a
    round meets that moment is up to timing, a third of them did; ten rounds, and the outcome
    checked is exact in each.)"""
    items = list(range(1000))
    with procpool.Pool(2) as pool:
        for _ in range(10):
            audit.note(pool)
            outcome = pool.map_async(exit_every, items, chunksize=7, return_exceptions=True)
            for item, result in zip(items, outcome.get(timeout=WAIT), strict=True):
                if item % 50 == 13:
                    assert isinstance(result, WorkerLostError), (item, result)
                    assert "(item " in str(result)
                else:
                    assert result == item * item, (item, result)
        assert_still_works(pool)
    audit.check()


@pytest.mark.timeout(60)
def test_a_worker_lost_after_its_last_item_fails_the_chunk(
    pools: Callable[..., procpool.Pool], audit: Audit
) -> None:
    """A worker that dies once every item was called (pickling the results, say) cannot say
    which item killed it: the chunk's items fail, each with the loss, and nothing runs again."""
    pool = pools(2)
    audit.note(pool)
    results = pool.map_async(dies_when_returned, range(6), chunksize=6, return_exceptions=True).get(
        timeout=WAIT
    )
    assert [type(r) for r in results] == [WorkerLostError] * 6
    assert "item" not in str(results[0])
    assert_still_works(pool)
    close_and_check(pool, audit)


# -- 4. cancel -------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_cancel_a_queued_task(
    pools: Callable[..., procpool.Pool], rendezvous: Rendezvous, tmp_path: Path, audit: Audit
) -> None:
    pool = pools(1)
    audit.note(pool)
    busy = pool.apply_async(block, (rendezvous.address, "busy"))
    pid = rendezvous.accept()
    marker = tmp_path / "ran"
    queued = pool.apply_async(touch, (str(marker),))
    assert queued.cancel() is True
    with pytest.raises(TaskCancelledError) as info:
        queued.get(timeout=WAIT)
    assert isinstance(info.value, concurrent.futures.CancelledError)
    assert not queued.successful()
    rendezvous.release_all()
    assert busy.get(timeout=WAIT) == "busy"
    # Dropping a queued task kills nobody; tasks run in order, so had the cancelled one been
    # kept, it would have run before this one.
    assert run(pool, getpid) == pid
    assert not marker.exists()
    assert queued.cancel() is False
    close_and_check(pool, audit)


@pytest.mark.timeout(60)
def test_cancel_settles_the_result_before_it_returns(rendezvous: Rendezvous) -> None:
    """Once cancel() has returned True, get() raises TaskCancelledError at once (as a
    concurrent.futures.Future is cancelled() once its cancel() returned True), rather than
    multiprocessing.TimeoutError from get(timeout=0).

    procpool answers the caller before it fails the task, a window of microseconds: a tiny GIL
    switch interval and many rounds show it. This is about the scheduler thread, not the worker
    processes, so it runs under the default start method only."""
    pool = procpool.Pool(1)
    try:
        busy = pool.apply_async(block, (rendezvous.address,))
        rendezvous.accept()
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            unsettled = 0
            for i in range(ROUNDS := 5000):
                queued = pool.apply_async(square, (i,))
                assert queued.cancel() is True
                unsettled += not queued.ready()
        finally:
            sys.setswitchinterval(interval)
        rendezvous.release_all()
        assert busy.get(timeout=WAIT) is None
        assert unsettled == 0, f"{unsettled} of {ROUNDS} results unsettled when cancel() returned"
    finally:
        pool.terminate()
        pool.join()


@pytest.mark.timeout(60)
def test_cancel_a_running_task(
    pools: Callable[..., procpool.Pool], rendezvous: Rendezvous, audit: Audit
) -> None:
    pool = pools(2)
    audit.note(pool)
    other = pool.apply_async(block, (rendezvous.address, "other"))
    other_pid = rendezvous.accept()
    running = pool.apply_async(block, (rendezvous.address, "running"))
    pid = rendezvous.accept()
    started = time.monotonic()
    assert running.cancel() is True
    with pytest.raises(TaskCancelledError):
        running.get(timeout=WAIT)
    assert not wait_gone({pid}, timeout=WAIT)  # its worker was killed
    assert time.monotonic() - started < 10
    assert not other.ready()  # the other worker's task goes on
    assert not is_gone(other_pid)
    rendezvous.release_all()
    assert other.get(timeout=WAIT) == "other"
    assert_still_works(pool)
    workers = live_workers(pool, audit)
    assert len(workers) == 2
    assert other_pid in workers
    assert pid not in workers
    close_and_check(pool, audit)


@pytest.mark.timeout(60)
def test_cancel_after_completion_returns_false(
    pools: Callable[..., procpool.Pool], audit: Audit
) -> None:
    pool = pools(2)
    audit.note(pool)
    done = pool.apply_async(square, (3,))
    assert done.get(timeout=WAIT) == 9
    assert done.cancel() is False
    assert done.get(timeout=0) == 9
    lost = pool.apply_async(kill_self)
    with pytest.raises(WorkerLostError):
        lost.get(timeout=WAIT)
    assert lost.cancel() is False
    with pytest.raises(WorkerLostError):
        lost.get(timeout=0)
    mapped = pool.map_async(square, range(5))
    assert mapped.get(timeout=WAIT) == [0, 1, 4, 9, 16]
    assert mapped.cancel() is False
    close_and_check(pool, audit)


@pytest.mark.timeout(60)
def test_cancel_map_async(
    pools: Callable[..., procpool.Pool], rendezvous: Rendezvous, tmp_path: Path, audit: Audit
) -> None:
    """Cancelling a map stops its running items and drops the rest; with return_exceptions too
    (cancel fails the whole call)."""
    pool = pools(2)
    workers = audit.note(pool)
    items = [(str(tmp_path), str(i), rendezvous.address) for i in range(6)]
    result = pool.starmap_async(touch_then_block, items, chunksize=1, return_exceptions=True)
    assert {rendezvous.accept(), rendezvous.accept()} == workers  # two items run
    assert result.cancel() is True
    with pytest.raises(TaskCancelledError):
        result.get(timeout=WAIT)
    assert not wait_gone(workers, timeout=WAIT)
    assert_still_works(pool)
    assert len(os.listdir(tmp_path)) == 2  # the four queued items never ran
    assert result.cancel() is False
    close_and_check(pool, audit)


# -- 5. memory cap -------------------------------------------------------------------------------


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.timeout(60)
def test_memory_cap_replaces_a_worker_that_grew(
    pools: Callable[..., procpool.Pool], method: str, audit: Audit
) -> None:
    # A fresh interpreter's worker holds about 20 MiB. A forked one (fork, and procpool's fork
    # server, a fork of this process) starts with the pytest process's pages already counted
    # as its own: the cap sits 50 MiB above that.
    cap = 50 * MIB + (resident_bytes() if method in ("fork", "forkserver") else 0)
    pool = pools(1, max_memory_per_child=cap)
    audit.note(pool)

    def worker_pid() -> int:
        return int(run(pool, getpid))

    pid = worker_pid()
    assert worker_pid() == pid  # no growth: the same worker
    assert pool.map_async(square, range(8)).get(timeout=WAIT) == [i * i for i in range(8)]
    assert worker_pid() == pid
    # It keeps 100 MiB: now it holds more than the cap allows, and is replaced once idle.
    assert run(pool, hoard, 100) == pid
    new_pid = worker_pid()
    assert new_pid != pid
    assert not wait_gone({pid}, timeout=WAIT)
    assert worker_pid() == new_pid  # the new worker has not grown: it stays
    close_and_check(pool, audit)


@pytest.mark.timeout(60)
def test_a_worker_killed_by_sigkill_names_its_last_memory(
    pools: Callable[..., procpool.Pool], audit: Audit
) -> None:
    pool = pools(1)  # no cap: a worker reports its memory after its first task anyway
    audit.note(pool)
    run(pool, hoard, 64)
    with pytest.raises(WorkerLostError) as info:
        run(pool, kill_self)
    message = str(info.value)
    assert "possibly the out-of-memory killer" in message
    match = re.search(r"\(its last reported memory: ([\d,]+) MiB\)", message)
    assert match, message
    assert 64 <= int(match[1].replace(",", "")) < 1024
    close_and_check(pool, audit)


# -- 6. Ctrl-C and signals to the parent -----------------------------------------------------------

# The pool's parent, run in a subprocess. It prints its workers' pids (and the stdlib helpers'),
# starts three tasks that block (both workers run one), and waits for them in the chosen call.
# A profile hook prints "blocked" as the main thread is about to block in procpool's wait, so
# the test signals a process that really is waiting there.
PARENT_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import procpool
from _helpers import block, helper_pids

method, address, wait = sys.argv[2], "\0" + sys.argv[3], sys.argv[4]
WAITS = {
    "ApplyResult.wait",
    "MapResult._decode_next",
    "_LazyIterator._next_chunk",
    "ProcessBackend.join",
}


def announce_when_blocked(frame, event, arg):
    if event != "c_call" or getattr(arg, "__name__", None) != "acquire":
        return
    locked = getattr(getattr(arg, "__self__", None), "locked", None)
    if locked is None or not locked():
        return  # this acquire does not block
    while frame is not None:
        code = frame.f_code
        if code.co_qualname in WAITS and "procpool" in code.co_filename:
            sys.setprofile(None)
            print("blocked", flush=True)
            return
        frame = frame.f_back


pool = procpool.Pool(2, context=procpool.get_context(method))
print(" ".join(str(p.pid) for p in pool._pool), flush=True)
print(" ".join(str(pid) for pid in helper_pids()), flush=True)
sys.setprofile(announce_when_blocked)
if wait == "map":
    pool.map(block, [address] * 3)
elif wait == "imap":
    for _ in pool.imap(block, [address] * 3):
        pass
else:
    results = [pool.apply_async(block, (address,)) for _ in range(3)]
    if wait == "join":
        pool.close()
        pool.join()
    else:
        for result in results:
            result.get()
print("the wait returned", file=sys.stderr)
"""


class LineReader:
    """Reads a subprocess's output line by line, each wait bounded."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""

    def readline(self, timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([self._fd], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no line within {timeout} s (got {self._buffer!r})"
            chunk = os.read(self._fd, 4096)
            assert chunk, f"the subprocess closed its output (got {self._buffer!r})"
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()


SIGNAL_CASES = [
    # Ctrl-C reaches the terminal's whole process group: parent, workers and stdlib helpers.
    "sigint-map",
    "sigint-get",
    "sigint-imap",
    "sigint-join",
    # Default dispositions: the parent dies at once; the workers follow through their lifeline.
    "sigterm-get",
    "sigkill-get",
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", SIGNAL_CASES)
def test_parent_signalled_while_it_waits(
    method: str, rendezvous: Rendezvous, tmp_path: Path, case: str
) -> None:
    name, _, wait = case.partition("-")
    signum = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}[name]
    processes: set[int] = set()
    with (
        (tmp_path / "stderr").open("w+") as stderr,
        subprocess.Popen(
            [sys.executable, "-c", PARENT_SCRIPT, TESTS_DIR, method, rendezvous.address[1:], wait],
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,  # a process group of its own, as a terminal's job has
        ) as parent,
    ):
        try:
            assert parent.stdout is not None
            lines = LineReader(parent.stdout.fileno())
            try:
                workers = {int(pid) for pid in lines.readline().split()}
                helpers = {int(pid) for pid in lines.readline().split()}
            except AssertionError:
                stderr.seek(0)
                pytest.fail(f"the parent printed no pids; its stderr: {stderr.read()}")
            processes = workers | helpers
            assert len(workers) == 2
            assert {rendezvous.accept(), rendezvous.accept()} == workers  # both run a task
            assert lines.readline() == "blocked"

            signalled = time.monotonic()
            if signum == signal.SIGINT:
                os.killpg(parent.pid, signal.SIGINT)
            else:
                os.kill(parent.pid, signum)
            assert parent.wait(WAIT) == -signum
            assert time.monotonic() - signalled < 5
            # Workers go at once: killed by the parent (Ctrl-C), or, when the parent dies
            # without a word, through their lifeline. The fork server and resource tracker too.
            alive = wait_gone(processes, timeout=2.0 if signum != signal.SIGINT else 5.0)
            assert not alive, f"{sorted(alive)} outlived their parent (workers: {workers})"

            stderr.seek(0)
            errors = stderr.read()
            assert "the wait returned" not in errors
            if signum == signal.SIGINT:
                # One traceback, the parent's: the workers ignore SIGINT and say nothing.
                assert errors.count("Traceback") == 1, errors
                assert errors.rstrip().endswith("KeyboardInterrupt"), errors
                assert "/procpool/" in errors, errors  # raised inside procpool's wait
            else:
                assert errors == ""
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
            for pid in processes - {parent.pid}:
                if not is_gone(pid):
                    os.kill(pid, signal.SIGKILL)


# -- 7. no leaks -----------------------------------------------------------------------------------

# Pool(1) create/use/close cycles per start method: a few seconds each on a 2-core machine.
CYCLES = {"fork": 100, "spawn": 10, "forkserver": 12}


@pytest.mark.timeout(60)
def test_no_descriptor_leak_over_pool_cycles(method: str, audit: Audit) -> None:
    context = procpool.get_context(method)

    def cycle() -> None:
        with procpool.Pool(1, context=context) as pool:
            assert run(pool, square, 3) == 9

    for _ in range(3):  # the fork server and resource tracker start, lazy imports happen
        cycle()
    before = fd_count()
    for _ in range(CYCLES[method]):
        cycle()
    assert fd_count() == before
    audit.check()


@pytest.mark.timeout(90)
def test_no_descriptor_or_zombie_leak_after_faults(
    method: str, tmp_path: Path, audit: Audit
) -> None:
    context = procpool.get_context(method)

    def faulty_cycle(n: int) -> None:
        # A rendezvous of its own: the connections it accepts are descriptors of this process.
        with Rendezvous(timeout=WAIT) as rendezvous:
            pool = procpool.Pool(2, context=context)
            try:
                audit.note(pool)
                with pytest.raises(WorkerLostError):
                    run(pool, kill_self)
                # The timed-out task checks in elsewhere: whether it got to before it was
                # killed is a race, and a stale check-in must not pass for the next task's.
                with Rendezvous(timeout=WAIT) as unanswered, pytest.raises(TaskTimeoutError):
                    run(pool, block, unanswered.address, timeout=0.2)
                running = pool.apply_async(block, (rendezvous.address,))
                rendezvous.accept()
                assert running.cancel() is True
                marker = str(tmp_path / f"died{n}")
                items = [(0, "ok", marker), (1, "die", marker), (2, "value", marker)]
                results = pool.map_async(
                    outcome_item, items, chunksize=1, return_exceptions=True
                ).get(timeout=WAIT)
                assert isinstance(results[1], WorkerLostError)
                doomed = pool.apply_async(block, (rendezvous.address,))
                rendezvous.accept()
                audit.note(pool)
                pool.terminate()
                with pytest.raises(PoolTerminatedError):
                    doomed.get(timeout=WAIT)
            finally:
                pool.terminate()
                pool.join()

    faulty_cycle(0)  # warm-up
    before = fd_count()
    for n in range(1, 3):
        faulty_cycle(n)
    assert fd_count() == before
    audit.check()  # no worker alive, no child left, no zombie


# Loses workers every way procpool knows, in a subprocess whose stderr the test reads: -X dev
# shows every ResourceWarning (unclosed files, sockets) and the resource tracker's complaints.
LOSSY_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import procpool
from _helpers import Rendezvous, block, square
from _fault_tolerance_tasks import kill_self, outcome_item

method, marker = sys.argv[2], sys.argv[3]
context = procpool.get_context(method)
with Rendezvous(timeout=30) as rendezvous:
    with procpool.Pool(2, context=context) as pool:
        for _ in range(3):
            try:
                pool.apply(kill_self)
            except procpool.WorkerLostError:
                pass
        try:
            pool.apply(kill_self, retries=1)
        except procpool.WorkerLostError:
            pass
        # The task that times out checks in elsewhere: whether it got to check in before it
        # was killed is a race, and its stale check-in must not be taken for the next task's.
        with Rendezvous(timeout=30) as unanswered:
            try:
                pool.apply(block, (unanswered.address,), timeout=0.2)
            except procpool.TaskTimeoutError:
                pass
        running = pool.apply_async(block, (rendezvous.address,))
        rendezvous.accept()
        running.cancel()
        items = [(0, "ok", marker), (1, "die", marker)]
        pool.map(outcome_item, items, chunksize=1, return_exceptions=True)
        assert pool.map(square, range(4)) == [0, 1, 4, 9]
    pool = procpool.Pool(2, context=context)
    doomed = pool.apply_async(block, (rendezvous.address,))
    rendezvous.accept()
    pool.terminate()
    pool.join()
print("done", flush=True)
"""


@pytest.mark.timeout(60)
def test_no_resource_tracker_warnings_after_lost_workers(method: str, tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-X",
            "dev",
            # Python 3.12+ warns whenever a process with threads forks: the hazard the fork start
            # method accepts (pyproject's filter says the same for the tests themselves).
            "-W",
            "ignore:This process (pid=:DeprecationWarning",
            "-c",
            LOSSY_SCRIPT,
            TESTS_DIR,
            method,
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "done\n"
    for word in ("resource_tracker", "leaked", "Warning", "Traceback"):
        assert word not in completed.stderr, completed.stderr
