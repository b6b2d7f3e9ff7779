"""procpool.ProcessPoolExecutor: the concurrent.futures API, and the Pool's fault guarantees.

The fault tests make the same checks as the Pool's (test_fault_tolerance.py): the error's type,
the other futures' results intact, the executor still usable, no process left behind. They
synchronise with running tasks through :class:`_helpers.Rendezvous`, never by sleeping.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import procpool
from procpool import (
    BrokenPoolError,
    InitializerError,
    PoolTerminatedError,
    TaskTimeoutError,
    WorkerLostError,
)

TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:  # workers find the helpers through sys.path (spawn copies it)
    sys.path.insert(0, TESTS_DIR)

from _fault_tolerance_tasks import die_first_time, getpid, kill_self  # noqa: E402
from _helpers import Rendezvous, block, crash, fail_initializer, is_gone, square, wait_gone  # noqa: E402
from _pools import WAIT, Audit  # noqa: E402

Executor = procpool.ProcessPoolExecutor


@pytest.fixture
def executors(method: str) -> Iterator[Callable[..., Executor]]:
    """Makes executors for the test's start method; ends whatever the test left running."""
    made: list[Executor] = []

    def make(max_workers: int = 2, **kwargs: Any) -> Executor:
        executor = Executor(max_workers, mp_context=procpool.get_context(method), **kwargs)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.terminate_workers()


def note(audit: Audit, executor: Executor) -> set[int]:
    pids = {pid for pid in executor._processes if pid is not None}
    audit.workers |= pids
    return pids


def shutdown_and_check(executor: Executor, audit: Audit) -> None:
    note(audit, executor)
    executor.shutdown(wait=True)
    assert executor._processes == {}
    audit.check()


def keywords(**kwargs: Any) -> dict[str, Any]:
    return kwargs


# -- the API -------------------------------------------------------------------------------------


def test_is_a_standard_executor_and_its_futures_are_standard() -> None:
    with Executor(2) as executor:
        assert isinstance(executor, concurrent.futures.ProcessPoolExecutor)
        assert executor._max_workers == 2
        assert executor._broken is False
        future = executor.submit(square, 7)
        assert isinstance(future, concurrent.futures.Future)
        done, _ = concurrent.futures.wait([future], timeout=WAIT)
        assert done == {future}
        assert future.result() == 49
        more = [executor.submit(square, i) for i in range(5)]
        finished = concurrent.futures.as_completed(more, timeout=WAIT)
        assert sorted(f.result() for f in finished) == [0, 1, 4, 9, 16]


def test_submit_passes_keyword_names_fn_and_self_through() -> None:
    with Executor(1) as executor:
        assert executor.submit(keywords, fn=1, self=2).result(WAIT) == {"fn": 1, "self": 2}


def test_map_chunks_timeout_and_errors() -> None:
    with Executor(2) as executor:
        expected = [pow(i, i) for i in range(40)]
        for chunksize in (1, 6, 50):
            assert list(executor.map(pow, range(40), range(40), chunksize=chunksize)) == expected
        with pytest.raises(ValueError, match="chunksize"):
            executor.map(pow, range(3), range(3), chunksize=0)
        results = executor.map(int, ["1", "x", "3"])
        assert next(results) == 1
        with pytest.raises(ValueError, match="invalid literal"):
            next(results)


def test_map_with_buffersize_reads_its_input_lazily() -> None:
    consumed = itertools.count()

    def numbers() -> Iterator[int]:
        for i in range(1000):
            next(consumed)
            yield i

    with Executor(2) as executor:
        results = executor.map(square, numbers(), buffersize=4)
        assert next(results) == 0
        # The first chunk was consumed and one more submitted in its place: at most 5 read.
        assert next(consumed) <= 5
        assert list(itertools.islice(results, 3)) == [1, 4, 9]
        results.close()  # cancels what was submitted ahead
        with pytest.raises(TypeError):
            executor.map(square, [1], buffersize=1.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="buffersize"):
            executor.map(square, [1], buffersize=0)


def test_shutdown_refuses_new_work_and_cancel_futures_drops_the_pending(
    rendezvous: Rendezvous,
) -> None:
    executor = Executor(1)
    running = executor.submit(block, rendezvous.address, "ran")
    rendezvous.accept()
    # The window holds 2 tasks (one per worker, one ahead); the rest stay pending here.
    futures = [executor.submit(square, i) for i in range(10)]
    rendezvous.release_all()
    executor.shutdown(wait=True, cancel_futures=True)
    assert running.result() == "ran"
    cancelled = [f for f in futures if f.cancelled()]
    assert len(cancelled) >= 8
    assert all(f.result() == i * i for i, f in enumerate(futures) if not f.cancelled())
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(square, 1)


def test_initializer_runs_in_each_worker_and_a_failing_one_breaks_the_executor(
    tmp_path: Path,
) -> None:
    with Executor(1, initializer=os.chdir, initargs=(str(tmp_path),)) as ok:
        assert ok.submit(os.getcwd).result(WAIT) == str(tmp_path)
    executor = Executor(1, initializer=fail_initializer, initargs=("no",))
    try:
        with pytest.raises(InitializerError):
            executor.submit(square, 2).result(WAIT)
        assert isinstance(executor._broken, BrokenPoolError)
        with pytest.raises(concurrent.futures.BrokenExecutor):
            executor.submit(square, 2)
    finally:
        executor.shutdown()


def test_max_tasks_per_child_replaces_workers() -> None:
    with Executor(1, max_tasks_per_child=1) as executor:
        pids = [executor.submit(getpid).result(WAIT) for _ in range(3)]
        assert len(set(pids)) == 3


def test_the_standard_library_machinery_is_blocked() -> None:
    with Executor(1) as executor, pytest.raises(NotImplementedError, match="standard library"):
        executor._adjust_process_count()  # type: ignore[attr-defined]


# -- faults (each start method) ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["exit3", "sigkill"])
def test_a_crash_fails_only_its_own_future(
    executors: Callable[..., Executor], rendezvous: Rendezvous, audit: Audit, how: str
) -> None:
    executor = executors(2)
    bystander = executor.submit(block, rendezvous.address, "intact")
    rendezvous.accept()
    with Rendezvous(timeout=WAIT) as victims:
        victim = executor.submit(crash, victims.address, how)
        pid = victims.accept()
        note(audit, executor)
        if how == "sigkill":
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerLostError) as caught:
            victim.result(WAIT)
    # Also the standard library's error for a death, so its except clauses keep working.
    assert isinstance(caught.value, concurrent.futures.process.BrokenProcessPool)
    assert caught.value.pid == pid
    rendezvous.release_all()
    assert bystander.result(WAIT) == "intact"
    assert executor._broken is False
    assert executor.submit(square, 3).result(WAIT) == 9
    shutdown_and_check(executor, audit)


def test_a_task_past_its_timeout_fails_and_its_worker_is_replaced(
    executors: Callable[..., Executor], rendezvous: Rendezvous, audit: Audit
) -> None:
    executor = executors(2, task_timeout=0.5)
    slow = executor.submit(block, rendezvous.address)
    pid = rendezvous.accept()
    with pytest.raises(TaskTimeoutError):
        slow.result(WAIT)
    assert not wait_gone({pid}, WAIT)  # killed, not left running
    assert list(executor.map(square, range(4))) == [0, 1, 4, 9]
    shutdown_and_check(executor, audit)


def test_cancel_stops_a_running_task(
    executors: Callable[..., Executor], rendezvous: Rendezvous, audit: Audit
) -> None:
    executor = executors(2)
    future = executor.submit(block, rendezvous.address)
    pid = rendezvous.accept()
    assert future.running()
    assert future.cancel()
    assert future.cancelled()
    done, _ = concurrent.futures.wait([future], timeout=WAIT)
    assert done == {future}
    with pytest.raises(concurrent.futures.CancelledError):
        future.result()
    assert executor.submit(square, 5).result(WAIT) == 25
    shutdown_and_check(executor, audit)
    assert is_gone(pid)


def test_retries_rerun_a_task_whose_worker_died(
    executors: Callable[..., Executor], audit: Audit, tmp_path: Path
) -> None:
    executor = executors(1, retries=1)
    marker = tmp_path / "marker"
    pid, value = executor.submit(die_first_time, str(marker), "v").result(WAIT)
    assert value == "v"
    assert pid != int(marker.read_text())  # the second attempt ran in a new worker
    shutdown_and_check(executor, audit)


def test_terminate_workers_ends_everything(
    executors: Callable[..., Executor], rendezvous: Rendezvous, audit: Audit
) -> None:
    executor = executors(1)
    running = executor.submit(block, rendezvous.address)
    pending = executor.submit(square, 2), executor.submit(square, 3)
    rendezvous.accept()
    note(audit, executor)
    executor.kill_workers()
    with pytest.raises(PoolTerminatedError):
        running.result(WAIT)
    assert all(f.done() for f in pending)
    audit.check()


def test_sigkill_inside_the_task_function(executors: Callable[..., Executor], audit: Audit) -> None:
    executor = executors(1)
    with pytest.raises(WorkerLostError):
        executor.submit(kill_self).result(WAIT)
    assert executor.submit(square, 4).result(WAIT) == 16
    shutdown_and_check(executor, audit)


_SUBMIT_AND_EXIT = """
import sys
import procpool
from pathlib import Path

if __name__ == "__main__":
    executor = procpool.ProcessPoolExecutor(2)
    for i in range(4):
        executor.submit(Path(sys.argv[1], str(i)).write_text, "done")
    # No shutdown: as with the standard library's executor, the work finishes before exit.
"""


def test_work_submitted_before_the_interpreter_exits_still_runs(tmp_path: Path) -> None:
    script = tmp_path / "submit_and_exit.py"
    script.write_text(_SUBMIT_AND_EXIT)
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        [sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["0", "1", "2", "3"]
    assert done.stderr == ""
