"""The Dask backend against real Dask components on 127.0.0.1.

* ``client``: a ``distributed.LocalCluster`` (2 worker processes, 1 thread each) with Dask's
  default scheduler settings, as an existing cluster would have them; shared by most tests.
* ``cli_cluster``: a real ``dask scheduler`` and two ``dask worker`` processes started from the
  command line, ports chosen at random and read from a scheduler file; stopped afterwards, and
  checked to be gone.
* one test lets a pool start (and stop) its own LocalCluster.
"""

from __future__ import annotations

import contextlib
import copyreg
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Importing distributed registers tblib's pickling for every exception class in copyreg, for
# the whole process. Other test modules check what happens when an exception cannot be
# unpickled (and forked workers inherit the registry), so the registrations hold only while
# this module's tests run.
_BEFORE_DASK = dict(copyreg.dispatch_table)
distributed = pytest.importorskip("distributed")
_WITH_DASK = dict(copyreg.dispatch_table)


def _use_dispatch(table: dict[Any, Any]) -> None:
    copyreg.dispatch_table.clear()
    copyreg.dispatch_table.update(table)


_use_dispatch(_BEFORE_DASK)

import procpool  # noqa: E402
from _dask_tasks import fail_once, initialize, initialized, lost_once, spin  # noqa: E402
from _helpers import (  # noqa: E402
    Rendezvous,
    block,
    child_processes,
    crash,
    fail_initializer,
    is_gone,
    return_unpicklable,
    run_item,
    square,
)
from _pools import WAIT  # noqa: E402
from procpool._dask_task import started_topic  # noqa: E402
from procpool._errors import MaybeEncodingError, RemoteTraceback  # noqa: E402
from procpool._feeding import IMAP_MAX_CHUNK  # noqa: E402

TESTS_DIR = str(Path(__file__).resolve().parent)


@pytest.fixture(scope="module", autouse=True)
def _dask_pickling() -> Iterator[None]:
    _use_dispatch(_WITH_DASK)
    yield
    _use_dispatch(_BEFORE_DASK)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
    )
    with cluster, distributed.Client(cluster, set_as_default=False) as dask_client:
        yield dask_client


@pytest.fixture
def rendezvous() -> Iterator[Rendezvous]:
    with Rendezvous(timeout=WAIT) as r:
        yield r


def _group_members(pgid: int) -> set[int]:
    """Live processes of a process group (zombies included: they were not reaped)."""
    members = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                members.add(int(entry))
    return members


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``dask scheduler`` and two ``dask worker`` processes; yields the scheduler's address."""
    directory = tmp_path_factory.mktemp("dask")
    scheduler_file = directory / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS_DIR, *sys.path])}
    cli = str(Path(sys.executable).with_name("dask"))
    common = ["--scheduler-file", str(scheduler_file)]
    worker = [cli, "worker", "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny", *common]
    commands = [
        [cli, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", *common],
        *[
            [*worker, "--no-dashboard", "--local-directory", str(directory / f"worker-{i}")]
            for i in range(2)
        ],
    ]
    started: list[subprocess.Popen[bytes]] = []
    try:
        for command in commands:
            started.append(
                subprocess.Popen(
                    command,
                    env=env,
                    cwd=directory,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group: its children go with it
                )
            )
        with distributed.Client(
            scheduler_file=str(scheduler_file), timeout=WAIT, set_as_default=False
        ) as probe:
            probe.wait_for_workers(2, timeout=WAIT)
            address = probe.scheduler.address
        yield address
    finally:
        # Killed outright: a graceful stop of a worker waits for a scheduler that may be gone.
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in started:
            process.wait(WAIT)
        leftover = set().union(*(_group_members(p.pid) for p in started))
        assert not leftover, f"Dask processes left running: {sorted(leftover)}"


# -- choosing the backend -------------------------------------------------------------------


def _python(code: str) -> str:
    """What a fresh interpreter running ``code`` prints."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT, check=True
    ).stdout


def test_without_dask_the_local_pool_works_and_dask_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['distributed'] = None; sys.modules['dask'] = None\n"
        "import procpool\n"
        "with procpool.Pool(1) as pool: assert pool.apply(abs, (-3,)) == 3\n"
        "try: procpool.Pool(backend='dask')\n"
        "except ImportError as e: print(e)\n"
    )
    assert "pip install 'procpool[dask]'" in _python(code)


def test_the_local_pool_does_not_import_dask() -> None:
    code = (
        "import sys, procpool\n"
        "with procpool.Pool(1) as pool: pool.apply(abs, (-1,))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed') "
        "or m == 'procpool._dask'))\n"
    )
    assert _python(code).strip() == "[]"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "dask", "maxtasksperchild": 5}, "--lifetime"),
        ({"backend": "dask", "max_memory_per_child": 2**30}, "--memory-limit"),
        ({"backend": "dask", "context": object()}, "context"),
        ({"address": "tcp://127.0.0.1:1", "processes": 4}, "processes"),
        ({"address": "tcp://127.0.0.1:1", "client": object()}, "not both"),
        ({"backend": "process", "address": "tcp://127.0.0.1:1"}, "backend='dask'"),
        ({"backend": "ray"}, "backend must be one of"),
    ],
)
def test_what_cannot_be_honoured_raises_at_construction(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        procpool.Pool(**kwargs)


# -- the Pool API on a LocalCluster ---------------------------------------------------------


def test_every_method_gives_the_local_results(client: Any) -> None:
    with procpool.Pool(client=client) as pool:
        assert pool._processes == 2
        assert pool.apply(divmod, (7, 2)) == (3, 1)
        assert pool.apply(lambda x, y=0: x + y, (1,), {"y": 2}) == 3
        assert pool.map(square, range(50)) == [x * x for x in range(50)]
        assert pool.map(square, range(50), chunksize=7) == [x * x for x in range(50)]
        assert pool.starmap(pow, [(2, 5), (3, 2)]) == [32, 9]
        assert list(pool.imap(square, range(30), chunksize=4)) == [x * x for x in range(30)]
        assert sorted(pool.imap_unordered(square, range(30))) == [x * x for x in range(30)]
        got: list[Any] = []
        done = threading.Event()
        pool.map_async(square, range(5), callback=lambda r: (got.append(r), done.set()))
        assert done.wait(WAIT)
        assert got == [[0, 1, 4, 9, 16]]
        applied = pool.apply_async(square, (9,))
        assert applied.get(WAIT) == 81
        assert applied.successful()
        assert pool.starmap_async(divmod, [(9, 4)]).get(WAIT) == [(2, 1)]
        assert pool.map(square, []) == []
    assert pool._pool == []


def test_the_executor_runs_on_dask(client: Any, rendezvous: Rendezvous) -> None:
    import concurrent.futures

    with procpool.ProcessPoolExecutor(backend="dask", client=client) as executor:
        assert executor._max_workers == 2
        assert executor.submit(divmod, 7, 2).result(WAIT) == (3, 1)
        assert list(executor.map(square, range(40), chunksize=6)) == [x * x for x in range(40)]
        failing = executor.submit(int, "x")
        with pytest.raises(ValueError, match="invalid literal"):
            failing.result(WAIT)
        assert isinstance(failing.exception(), ValueError)
        futures = [executor.submit(square, i) for i in range(10)]
        done, _ = concurrent.futures.wait(futures, timeout=WAIT)
        assert sorted(f.result() for f in done) == [x * x for x in range(10)]
        # A running task's future can be cancelled: the task stops, the executor goes on.
        running = executor.submit(block, rendezvous.address, 1)
        rendezvous.accept()
        assert running.cancel()
        assert running.cancelled()
        rendezvous.release_all()
        assert executor.submit(square, 5).result(WAIT) == 25


def test_automatic_chunks_batch_tiny_items_into_few_dask_tasks(client: Any) -> None:
    with procpool.Pool(client=client) as pool:
        assert pool.map(square, range(3000)) == [x * x for x in range(3000)]
        # The measured time per item has sized the chunks: far fewer Dask tasks than items.
        assert pool._backend.item_seconds(pool._dumps_callable(square)).seconds is not None
        keys = next(pool._backend._keys)
    assert keys < 1000


def test_imap_over_an_endless_input_reads_a_bounded_window(client: Any) -> None:
    read = itertools.count()
    pool = procpool.Pool(client=client)
    try:
        results = pool.imap(square, (next(read) for _ in itertools.count()))
        assert [next(results) for _ in range(20)] == [x * x for x in range(20)]
        # A window of chunks, of at most IMAP_MAX_CHUNK items each, runs ahead of the consumer.
        bound = (pool._imap_window() + 20) * IMAP_MAX_CHUNK
        assert next(read) <= bound
    finally:
        pool.terminate()
        pool.join()


def test_task_exceptions_come_back_with_the_remote_traceback(client: Any) -> None:
    with procpool.Pool(client=client) as pool:
        with pytest.raises(ValueError, match="invalid literal") as info:
            pool.apply(int, ("x",))
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "invalid literal" in str(info.value.__cause__)
        with pytest.raises(ZeroDivisionError):
            pool.starmap(divmod, [(1, 0)])
        mixed = pool.map(run_item, [2, (int, ("y",)), 3], chunksize=1, return_exceptions=True)
        assert mixed[::2] == [4, 9]
        assert isinstance(mixed[1], ValueError)


def test_an_unpicklable_result_fails_its_task_with_maybe_encoding_error(client: Any) -> None:
    with procpool.Pool(client=client) as pool:
        with pytest.raises(MaybeEncodingError):
            pool.apply(return_unpicklable)
        assert pool.apply(square, (4,)) == 16


def test_retries_and_retry_on_run_a_task_again(client: Any, tmp_path: Path) -> None:
    with procpool.Pool(client=client, retries=1, retry_on=OSError) as pool:
        assert pool.apply(fail_once, (str(tmp_path / "a"),)) == "ok"
        with pytest.raises(OSError, match="first attempt"):
            pool.apply(fail_once, (str(tmp_path / "b"),), retries=0)


def test_a_task_timeout_fails_the_task_and_stops_its_python_code(
    client: Any, rendezvous: Rendezvous
) -> None:
    with procpool.Pool(client=client, task_timeout=0.5) as pool:
        result = pool.apply_async(spin, (rendezvous.address,))
        rendezvous.accept()  # it runs
        with pytest.raises(procpool.TaskTimeoutError, match=r"0\.5 s timeout"):
            result.get(WAIT)
        rendezvous.accept()  # its finally clause ran: the call was stopped
        assert pool.apply(square, (3,)) == 9


def test_a_task_that_times_out_again_fails_with_its_attempts_noted(
    client: Any, rendezvous: Rendezvous
) -> None:
    with (
        procpool.Pool(client=client, task_timeout=0.3, retries=1) as pool,
        pytest.raises(procpool.TaskTimeoutError) as info,
    ):
        pool.apply(spin, (rendezvous.address,))
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "attempt 1: ran past its 0.3 s timeout on Dask worker tcp://127.0.0.1:" in notes


def test_cancel_and_terminate_fail_running_tasks(client: Any, rendezvous: Rendezvous) -> None:
    pool = procpool.Pool(client=client)
    cancelled = pool.apply_async(block, (rendezvous.address, 1))
    rendezvous.accept()
    assert cancelled.cancel()
    with pytest.raises(procpool.TaskCancelledError):
        cancelled.get(WAIT)
    running = pool.apply_async(block, (rendezvous.address, 2))
    rendezvous.accept()
    pool.terminate()
    with pytest.raises(procpool.PoolTerminatedError):
        running.get(WAIT)
    pool.join()
    rendezvous.release_all()


def test_leaving_the_block_by_an_exception_terminates(client: Any, rendezvous: Rendezvous) -> None:
    pool = procpool.Pool(client=client)
    assert pool.__enter__() is pool
    running = pool.apply_async(block, (rendezvous.address, 3))
    rendezvous.accept()
    pool.__exit__(RuntimeError, RuntimeError("leave the block"), None)  # as `with` would
    with pytest.raises(procpool.PoolTerminatedError):
        running.get(WAIT)
    rendezvous.release_all()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply(square, (1,))


def test_an_initializer_that_raises_fails_the_tasks(client: Any) -> None:
    with procpool.Pool(client=client, initializer=fail_initializer, initargs=("no",)) as pool:
        with pytest.raises(procpool.InitializerError, match="ValueError: no") as info:
            pool.apply(square, (2,))
        assert isinstance(info.value.__cause__, ValueError)
        with pytest.raises(procpool.InitializerError):
            pool.map(square, range(3))


def _serve(rendezvous: Rendezvous) -> threading.Thread:
    """Let every task that checks in return at once, until the rendezvous closes."""

    def serve() -> None:
        while True:
            try:
                rendezvous.accept()
            except OSError:  # closed, or nobody came: the test is over
                return
            rendezvous.release_all()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def _wait_until_announced(client: Any, pool: procpool.Pool, count: int) -> None:
    """Wait until the scheduler has the start announcements of ``count`` of the pool's tasks.

    A task announces its start just before it runs; killed within that instant, its worker may
    take the announcement with it, and Dask then runs the task again as never started."""
    topic = started_topic(pool._backend._name)  # type: ignore[attr-defined]
    deadline = time.monotonic() + WAIT
    while len(client.get_events(topic)) < count:
        assert time.monotonic() < deadline, "the tasks never announced their start"


def test_a_killed_worker_fails_exactly_its_task_and_the_pool_goes_on(
    client: Any, rendezvous: Rendezvous
) -> None:
    """Dask's default settings would run the task again (then raise KilledWorker): the pool
    fails it with WorkerLostError; initializers also run in the worker that replaces it."""
    pids = set(client.run(os.getpid).values())
    with procpool.Pool(client=client, initializer=initialize, initargs=("ready",)) as pool:
        lost = threading.Event()
        items = [(block, (rendezvous.address, i)) for i in range(4)]
        results = [
            pool.apply_async(run_item, (item,), error_callback=lambda _: lost.set())
            for item in items
        ]
        first, second = rendezvous.accept(), rendezvous.accept()
        assert {first, second} == pids  # one task runs in each worker
        _wait_until_announced(client, pool, 2)
        os.kill(first, signal.SIGKILL)
        assert lost.wait(WAIT)
        rendezvous.release_all()
        _serve(rendezvous)  # the other tasks, on the surviving worker or on its replacement
        outcomes: list[Any] = []
        for result in results:
            try:
                outcomes.append(result.get(WAIT))
            except procpool.WorkerLostError as exc:
                outcomes.append(exc)
        lost_ones = [o for o in outcomes if isinstance(o, procpool.WorkerLostError)]
        assert len(lost_ones) == 1
        assert "left the cluster" in str(lost_ones[0])
        assert all(o == i for i, o in enumerate(outcomes) if o is not lost_ones[0])
        assert pool.map(square, range(20)) == [x * x for x in range(20)]
        client.wait_for_workers(2, timeout=WAIT)
        assert {value for value, _ in client.run(initialized).values()} == {"ready"}


def test_a_task_lost_with_its_worker_runs_again_when_retries_allow(
    client: Any, rendezvous: Rendezvous, tmp_path: Path
) -> None:
    with procpool.Pool(client=client, retries=1) as pool:
        result = pool.apply_async(lost_once, (rendezvous.address, str(tmp_path / "marker")))
        pid = rendezvous.accept()
        _wait_until_announced(client, pool, 1)
        os.kill(pid, signal.SIGKILL)
        assert result.get(WAIT) == "ran again"
    client.wait_for_workers(2, timeout=WAIT)


# -- a pool's own LocalCluster --------------------------------------------------------------


def test_a_pool_starts_and_stops_its_own_local_cluster(rendezvous: Rendezvous) -> None:
    before = child_processes()
    with procpool.Pool(2, backend="dask") as pool:
        workers = child_processes() - before
        assert pool._processes == 2
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
        # Its scheduler allows no failure: a lost worker's task fails at once (KilledWorker).
        doomed = pool.apply_async(crash, (rendezvous.address, "sigkill"))
        os.kill(rendezvous.accept(), signal.SIGKILL)
        with pytest.raises(procpool.WorkerLostError):
            doomed.get(WAIT)
        assert pool.apply(square, (5,)) == 25
    assert workers
    assert all(is_gone(pid) for pid in workers)


def test_a_pool_left_open_at_exit_stops_its_cluster() -> None:
    code = (
        "import os, procpool\n"
        "if __name__ == '__main__':\n"
        "    pool = procpool.Pool(2, backend='dask')\n"
        "    assert pool.apply(abs, (-2,)) == 2\n"
        "    print(*pool._backend._client.run(os.getpid).values())\n"
    )
    workers = [int(pid) for pid in _python(code).split()]
    assert len(workers) == 2
    assert all(is_gone(pid) for pid in workers)


# -- a cluster started from the command line ------------------------------------------------


def test_a_pool_on_a_scheduler_address(cli_cluster: str) -> None:
    with procpool.Pool(address=cli_cluster, initializer=initialize, initargs=("cli",)) as pool:
        assert pool._processes == 2
        assert pool.map(square, range(100)) == [x * x for x in range(100)]
        assert {value for value, _ in pool.map(initialized, range(4), chunksize=1)} == {"cli"}
        with pytest.raises(ZeroDivisionError):
            pool.apply(divmod, (1, 0))
