"""The public surface with real processes: ``Process``, ``Pool``, results, module-level names.

Functions that workers run are module-level (spawn and forkserver import this module in the
child), except the lambdas and closures whose point is to travel by value. Tests synchronise on
events and pipes, never on sleeps; every pool and process is cleaned up by a ``with`` block or a
``finally``.
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import multiprocessing.pool
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import procpool
import procpool.pool
from procpool import Pool, PoolTerminatedError
from procpool._feeding import IMAP_MAX_CHUNK

TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:  # workers find the helpers through sys.path (spawn copies it)
    sys.path.insert(0, TESTS_DIR)

from _helpers import Rendezvous, block  # noqa: E402

pytestmark = pytest.mark.timeout(30)

WAIT = 20  # seconds: the longest any single wait in these tests may take

# -- functions the workers run --------------------------------------------------------------


def _square(x: int) -> int:
    return x * x


def _add(a: int, b: int, c: int = 0) -> int:
    return a + b + c


def _getpid(_: object = None) -> int:
    return os.getpid()


def _raise_value(x: object) -> None:
    raise ValueError("bad value", x)  # <- the failing line


def _wait_event(event: object, value: object = "released") -> object:
    assert event.wait(WAIT)  # type: ignore[attr-defined]
    return value


# (In this process) What unpickling an ``_Unpickled`` result runs: see the map test below.
_ON_UNPICKLE: list[Any] = []


class _Unpickled:
    """A result whose unpickling, in the caller's process, runs the hooks in _ON_UNPICKLE. It
    weighs 100 kB (in band): enough for the waiting caller to be woken to unpickle it."""

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (_unpickled, (b"x" * 100_000,))


def _unpickled(_: bytes) -> str:
    for hook in _ON_UNPICKLE:
        hook()
    return "unpickled"


def _first_or_block(index: int, address: str) -> object:
    return _Unpickled() if index == 0 else block(address, index)


_init_value: object = None


def _initializer(value: object) -> None:
    global _init_value
    _init_value = value


def _read_init(_: object = None) -> object:
    return _init_value


def _report(q: object, *args: object, **kwargs: object) -> None:
    me = multiprocessing.current_process()
    q.put((args, kwargs, me.name, me.daemon))  # type: ignore[attr-defined]


def _exit_with(code: int) -> None:
    sys.exit(code)


def _block_on(conn: object) -> None:
    conn.recv()  # type: ignore[attr-defined]


def _use_primitives(q, conn, lock, event, value, array, shared) -> None:  # type: ignore[no-untyped-def]
    with lock:
        value.value += 1
    array[0] = 9
    q.put("from queue")
    conn.send("from pipe")
    shared["key"] = "from manager"
    event.set()


class _QueueHolder:
    """An object carrying a Queue, whose bound method is a Process target."""

    def __init__(self, q: object) -> None:
        self.q = q

    def run(self, value: object) -> None:
        self.q.put(value)  # type: ignore[attr-defined]


def _put(q: object, value: object) -> None:
    q.put(value)  # type: ignore[attr-defined]


_init_queue: object = None
_init_counter: object = None


def _init_shared(q: object, counter: object) -> None:
    global _init_queue, _init_counter
    _init_queue, _init_counter = q, counter


def _use_shared(x: int) -> int:
    with _init_counter.get_lock():  # type: ignore[attr-defined]
        _init_counter.value += 1  # type: ignore[attr-defined]
    _init_queue.put(x)  # type: ignore[attr-defined]
    return x


class _Doubler(procpool.Process):
    """A Process subclass that does its work in ``run()``."""

    def __init__(self, q: object, value: int) -> None:
        super().__init__(name="doubler")
        self.q = q
        self.value = value

    def run(self) -> None:
        self.q.put(self.value * 2)  # type: ignore[attr-defined]


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manager() -> Iterator[object]:
    with procpool.Manager() as m:
        yield m


@pytest.fixture
def event(manager: object) -> Iterator[object]:
    """A manager Event: picklable, so a pool task can block on it.

    Set at teardown, so that a failed test leaves no task of the shared pool blocked.
    """
    ev = manager.Event()  # type: ignore[attr-defined]
    yield ev
    ev.set()


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    """One pool shared by the tests that only submit work to it (workers import this module
    once, not once per test)."""
    p = Pool(2)
    try:
        yield p
    finally:
        p.close()
        p.join()


def _started(process: procpool.Process) -> procpool.Process:
    process.start()
    return process


def _drain(iterator: Iterator[object]) -> list[object]:
    """Read an imap iterator to its end; each item must come within WAIT seconds."""
    items = []
    while True:
        try:
            items.append(iterator.next(timeout=WAIT))  # type: ignore[attr-defined]
        except StopIteration:
            return items


def _reap(*processes: procpool.Process) -> None:
    for p in processes:
        if p._popen is not None and p.exitcode is None:  # type: ignore[attr-defined]
            p.kill()
        if p._popen is not None:  # type: ignore[attr-defined]
            p.join(WAIT)


# -- Process --------------------------------------------------------------------------------


def test_process_target_args_kwargs_name_daemon() -> None:
    q = procpool.Queue()
    p = procpool.Process(
        target=_report, args=(q, 1, 2), kwargs={"k": 3}, name="worker-x", daemon=True
    )
    assert p.pid is None
    assert p.exitcode is None
    assert not p.is_alive()
    try:
        p.start()
        assert isinstance(p.pid, int)
        assert p.pid != os.getpid()
        assert q.get(timeout=WAIT) == ((1, 2), {"k": 3}, "worker-x", True)
        p.join(WAIT)
        assert not p.is_alive()
        assert p.exitcode == 0
        p.close()
        with pytest.raises(ValueError, match="closed"):
            p.is_alive()
    finally:
        if p._closed is False:  # type: ignore[attr-defined]
            _reap(p)
        q.close()
        q.join_thread()


def test_process_exitcode() -> None:
    p = _started(procpool.Process(target=_exit_with, args=(7,)))
    try:
        p.join(WAIT)
        assert p.exitcode == 7
    finally:
        _reap(p)


def test_process_join_timeout_terminate_kill() -> None:
    r, w = procpool.Pipe(duplex=False)
    p1 = _started(procpool.Process(target=_block_on, args=(r,)))
    p2 = _started(procpool.Process(target=_block_on, args=(r,)))
    try:
        p1.join(0.05)  # it blocks on the pipe: join gives up
        assert p1.is_alive()
        assert p1.exitcode is None
        with pytest.raises(ValueError, match="still running"):
            p1.close()
        p1.terminate()
        p1.join(WAIT)
        assert not p1.is_alive()
        assert p1.exitcode == -signal.SIGTERM
        p2.kill()
        p2.join(WAIT)
        assert p2.exitcode == -signal.SIGKILL
        p1.close()
        p2.close()
    finally:
        _reap(*(p for p in (p1, p2) if not p._closed))  # type: ignore[attr-defined]
        r.close()
        w.close()


def test_process_join_returns_when_released() -> None:
    r, w = procpool.Pipe(duplex=False)
    p = _started(procpool.Process(target=_block_on, args=(r,)))
    try:
        w.send("go")
        p.join(WAIT)
        assert p.exitcode == 0
    finally:
        _reap(p)
        r.close()
        w.close()


def test_process_subclass_run() -> None:
    q = procpool.Queue()
    p = _started(_Doubler(q, 21))
    try:
        assert q.get(timeout=WAIT) == 42
        p.join(WAIT)
        assert p.exitcode == 0
        assert p.name == "doubler"
    finally:
        _reap(p)
        q.close()
        q.join_thread()


def test_lambda_and_closure_targets_under_spawn() -> None:
    ctx = procpool.get_context("spawn")
    factor = 3

    def closure(q: object, x: int) -> None:
        q.put(x * factor)  # type: ignore[attr-defined]

    q = ctx.Queue()
    p1 = _started(ctx.Process(target=lambda q: q.put("from a lambda"), args=(q,)))
    p2 = _started(ctx.Process(target=closure, args=(q, 5)))
    try:
        got = {q.get(timeout=WAIT), q.get(timeout=WAIT)}
        assert got == {"from a lambda", 15}
        p1.join(WAIT)
        p2.join(WAIT)
        assert p1.exitcode == 0
        assert p2.exitcode == 0
    finally:
        _reap(p1, p2)
        q.close()
        q.join_thread()


def test_primitives_with_a_procpool_process() -> None:
    q = procpool.Queue()
    r, w = procpool.Pipe()
    lock = procpool.Lock()
    event = procpool.Event()
    value = procpool.Value("i", 41)
    array = procpool.Array("i", [0, 1, 2])
    with procpool.Manager() as m:
        shared = m.dict()
        p = _started(
            procpool.Process(target=_use_primitives, args=(q, w, lock, event, value, array, shared))
        )
        try:
            assert event.wait(WAIT)
            assert q.get(timeout=WAIT) == "from queue"
            assert r.poll(WAIT)
            assert r.recv() == "from pipe"
            p.join(WAIT)
            assert p.exitcode == 0
            assert value.value == 42
            assert list(array) == [9, 1, 2]
            assert shared["key"] == "from manager"
        finally:
            _reap(p)
            q.close()
            q.join_thread()
            r.close()
            w.close()


# -- Pool: the calls ------------------------------------------------------------------------


def test_apply(pool: Pool) -> None:
    assert pool.apply(_add, (1, 2)) == 3
    assert pool.apply(_add, (1, 2), {"c": 10}) == 13


def test_apply_async_callback_has_run_when_get_returns(pool: Pool) -> None:
    seen: list[object] = []
    result = pool.apply_async(_square, (4,), callback=seen.append)
    assert result.get(WAIT) == 16
    assert seen == [16]
    assert result.ready()
    assert result.successful()


def test_apply_async_error_callback(pool: Pool) -> None:
    seen: list[BaseException] = []
    called: list[object] = []
    result = pool.apply_async(
        _raise_value, ("x",), callback=called.append, error_callback=seen.append
    )
    with pytest.raises(ValueError, match="bad value"):
        result.get(WAIT)
    assert len(seen) == 1
    assert isinstance(seen[0], ValueError)
    assert called == []
    assert not result.successful()


def test_map_and_map_async(pool: Pool) -> None:
    assert pool.map(_square, range(10)) == [x * x for x in range(10)]
    assert pool.map(_square, []) == []
    seen: list[object] = []
    result = pool.map_async(_square, range(5), callback=seen.append)
    assert result.get(WAIT) == [0, 1, 4, 9, 16]
    assert seen == [[0, 1, 4, 9, 16]]


@pytest.mark.parametrize("chunksize", [1, 3, 100])
def test_map_chunksize(pool: Pool, chunksize: int) -> None:
    assert pool.map(_square, range(25), chunksize=chunksize) == [x * x for x in range(25)]
    assert list(pool.imap(_square, range(25), chunksize=chunksize)) == [x * x for x in range(25)]


def test_map_over_a_generator(pool: Pool) -> None:
    assert pool.map(_square, (x for x in range(7))) == [x * x for x in range(7)]


def test_bad_chunksize(pool: Pool) -> None:
    with pytest.raises(ValueError, match="Chunksize"):
        pool.map(_square, range(3), chunksize=0)
    with pytest.raises(ValueError, match="Chunksize"):
        pool.imap(_square, range(3), chunksize=0)


def test_imap_and_imap_unordered(pool: Pool) -> None:
    assert list(pool.imap(_square, range(20))) == [x * x for x in range(20)]
    assert sorted(pool.imap_unordered(_square, range(20), chunksize=3)) == sorted(
        x * x for x in range(20)
    )
    assert list(pool.imap(_square, [])) == []


def test_starmap_and_starmap_async(pool: Pool) -> None:
    pairs = [(i, i + 1) for i in range(10)]
    assert pool.starmap(_add, pairs) == [a + b for a, b in pairs]
    assert pool.starmap_async(_add, pairs, chunksize=4).get(WAIT) == [a + b for a, b in pairs]


def test_async_result_states_and_get_timeout(pool: Pool, event: object) -> None:
    result = pool.apply_async(_wait_event, (event, 7))
    assert not result.ready()
    with pytest.raises(ValueError, match="not ready"):
        result.successful()
    assert result.wait(0.05) is None
    assert not result.ready()
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0.05)
    event.set()  # type: ignore[attr-defined]
    result.wait(WAIT)
    assert result.ready()
    assert result.successful()
    assert result.get(0) == 7


def test_map_async_get_timeout(pool: Pool, event: object) -> None:
    result = pool.map_async(_wait_event, [event, event])
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0.05)
    event.set()  # type: ignore[attr-defined]
    assert result.get(WAIT) == ["released", "released"]


def test_imap_next_timeout(pool: Pool, event: object) -> None:
    it = pool.imap(_wait_event, [event])
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=0.05)
    event.set()  # type: ignore[attr-defined]
    assert it.next(timeout=WAIT) == "released"
    with pytest.raises(StopIteration):
        it.next(timeout=WAIT)


def test_closed_pool_rejects_work() -> None:
    pool = Pool(2)
    try:
        pool.close()
        with pytest.raises(ValueError, match="Pool not running"):
            pool.apply_async(_square, (1,))
        with pytest.raises(ValueError, match="Pool not running"):
            pool.map(_square, [1])
        with pytest.raises(ValueError, match="Pool not running"):
            pool.imap(_square, [1])
        with pytest.raises(ValueError, match="Pool not running"):
            pool.apply(_square, (1,))
        pool.join()
    finally:
        pool.terminate()
        pool.join()


def test_join_on_running_pool_raises(pool: Pool) -> None:
    with pytest.raises(ValueError, match="still running"):
        pool.join()


@pytest.mark.parametrize("processes", [0, -1])
def test_bad_process_count(processes: int) -> None:
    with pytest.raises(ValueError, match="Number of processes"):
        Pool(processes)


@pytest.mark.parametrize("maxtasks", [0, -1, 1.5, "2"])
def test_bad_maxtasksperchild(maxtasks: object) -> None:
    with pytest.raises(ValueError, match="maxtasksperchild"):
        Pool(1, maxtasksperchild=maxtasks)  # type: ignore[arg-type]


def test_initializer_sets_global() -> None:
    with Pool(2, initializer=_initializer, initargs=("set by init",)) as pool:
        assert pool.map(_read_init, range(4)) == ["set by init"] * 4


def test_maxtasksperchild_changes_pids() -> None:
    with Pool(1, maxtasksperchild=1) as pool:
        pids = [pool.apply(_getpid) for _ in range(3)]
    assert len(set(pids)) == 3
    assert os.getpid() not in pids


_POPEN_MODULES = {
    "fork": "multiprocessing.popen_fork",
    "spawn": "multiprocessing.popen_spawn_posix",
    "forkserver": "multiprocessing.popen_forkserver",
}


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize("source", ["procpool", "multiprocessing"])
def test_context_start_methods(method: str, source: str) -> None:
    module = procpool if source == "procpool" else multiprocessing
    ctx = module.get_context(method)
    with Pool(2, context=ctx) as pool:
        workers = list(pool._pool)
        assert workers
        # procpool's fork server is its own (a zygote forked from the parent, see _zygote).
        expected = "procpool._zygote" if (source, method) == ("procpool", "forkserver") else None
        assert {type(w._popen).__module__ for w in workers} == {expected or _POPEN_MODULES[method]}
        assert pool.map(_square, range(6)) == [0, 1, 4, 9, 16, 25]
        assert pool.apply(_getpid) != os.getpid()


def test_context_pool_method() -> None:
    with procpool.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_square, (3,)) == 9


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_lambdas_and_closures_as_pool_functions(method: str) -> None:
    offset = 100

    def closure(x: int) -> int:
        return x + offset

    with Pool(2, context=procpool.get_context(method)) as pool:
        assert pool.map(lambda x: x * 10, range(4)) == [0, 10, 20, 30]
        assert pool.map(closure, range(3)) == [100, 101, 102]
        assert pool.apply(lambda a, b: a - b, (5, 3)) == 2
        assert list(pool.imap(closure, range(2))) == [100, 101]
        assert pool.starmap(lambda a, b: a * b, [(2, 3), (4, 5)]) == [6, 20]


@pytest.mark.parametrize("call", ["apply", "map", "imap"])
def test_task_exception_keeps_type_args_and_remote_traceback(pool: Pool, call: str) -> None:
    calls = {
        "apply": lambda: pool.apply(_raise_value, (3,)),
        "map": lambda: pool.map(_raise_value, [3]),
        "imap": lambda: list(pool.imap(_raise_value, [3])),
    }
    with pytest.raises(ValueError, match="bad value") as info:
        calls[call]()
    exc = info.value
    assert type(exc) is ValueError
    assert exc.args == ("bad value", 3)
    cause = exc.__cause__
    assert isinstance(cause, multiprocessing.pool.RemoteTraceback)
    assert 'raise ValueError("bad value", x)  # <- the failing line' in cause.tb
    assert "_raise_value" in cause.tb


def test_with_block_waits_for_submitted_work(event: object) -> None:
    with Pool(2) as pool:
        blocked = pool.apply_async(_wait_event, (event, "late"))
        mapped = pool.map_async(_square, range(50), chunksize=1)
        event.set()  # type: ignore[attr-defined]
    assert blocked.ready()
    assert blocked.get(0) == "late"
    assert mapped.ready()
    assert mapped.get(0) == [x * x for x in range(50)]


def test_with_block_terminates_on_exception(event: object) -> None:
    class Boom(Exception):
        pass

    results = []

    def submit_then_fail() -> None:
        with Pool(2) as pool:
            results.append(pool.apply_async(_wait_event, (event,)))
            raise Boom

    with pytest.raises(Boom):
        submit_then_fail()
    [result] = results
    assert result.ready()
    with pytest.raises(PoolTerminatedError):
        result.get(WAIT)


def test_imap_input_exception_at_its_position(pool: Pool) -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        yield 3
        raise KeyError("input failed")

    it = pool.imap(_square, source())
    assert next(it) == 1
    assert next(it) == 4
    assert next(it) == 9
    with pytest.raises(KeyError) as info:
        next(it)
    assert info.value.args == ("input failed",)
    assert info.value.__cause__ is None
    with pytest.raises(StopIteration):
        next(it)


def test_imap_unordered_input_exception(pool: Pool) -> None:
    def source() -> Iterator[int]:
        yield 1
        raise KeyError("input failed")

    it = pool.imap_unordered(_square, source())
    with pytest.raises(KeyError, match="input failed"):
        _drain(it)


def test_imap_backpressure_on_infinite_input() -> None:
    produced = itertools.count()
    ran_away = threading.Event()
    consumed_first = threading.Event()
    high_water = [0]

    pool = Pool(2)
    # The bound: the window of chunks in flight, each of at most IMAP_MAX_CHUNK items.
    bound = pool._imap_window() * IMAP_MAX_CHUNK

    def source() -> Iterator[int]:
        for x in itertools.count():
            n = next(produced)
            high_water[0] = n
            if n > bound + 5:
                ran_away.set()
            yield x

    try:
        it = pool.imap(_square, source())
        assert [it.next(timeout=WAIT) for _ in range(5)] == [0, 1, 4, 9, 16]
        consumed_first.set()
        # The feeder may run a bounded window ahead of the consumer, not without end.
        assert not ran_away.wait(0.5), f"the feeder read {high_water[0]} items ahead"
        pool.terminate()
        pool.join()
        # What had arrived may still be read; then the iterator says the pool ended.
        with pytest.raises(PoolTerminatedError):
            _drain(it)
    finally:
        pool.terminate()
        pool.join()
    for thread in threading.enumerate():
        if thread.name == "procpool-feeder":
            thread.join(WAIT)
            assert not thread.is_alive()
    assert high_water[0] <= bound + 5


def test_pool_cannot_be_pickled(pool: Pool) -> None:
    import pickle

    with pytest.raises(NotImplementedError):
        pickle.dumps(pool)


# -- module-level surface -------------------------------------------------------------------


def test_all_names_importable() -> None:
    assert len(set(procpool.__all__)) == len(procpool.__all__)
    for name in procpool.__all__:
        assert hasattr(procpool, name), name
    namespace: dict[str, object] = {}
    exec("from procpool import *", namespace)
    assert set(procpool.__all__) <= set(namespace)


def test_errors_are_process_errors() -> None:
    for name in (
        "ProcpoolError",
        "WorkerLostError",
        "TaskDecodeError",
        "TaskTimeoutError",
        "PoolTerminatedError",
        "BrokenPoolError",
        "InitializerError",
    ):
        assert issubclass(getattr(procpool, name), multiprocessing.ProcessError)
    assert procpool.TimeoutError is multiprocessing.TimeoutError


def test_cpu_count() -> None:
    assert 1 <= procpool.cpu_count() <= (os.cpu_count() or 1)


def test_pool_module_names() -> None:
    names = (
        "Pool",
        "ApplyResult",
        "AsyncResult",
        "MapResult",
        "IMapIterator",
        "IMapUnorderedIterator",
        "MaybeEncodingError",
        "RemoteTraceback",
        "RUN",
        "CLOSE",
        "TERMINATE",
    )
    for name in names:
        assert hasattr(procpool.pool, name), name
    assert procpool.pool.Pool is procpool.Pool
    assert procpool.pool.RUN == "RUN"
    assert procpool.pool.CLOSE == "CLOSE"
    assert procpool.pool.TERMINATE == "TERMINATE"
    assert procpool.pool.MaybeEncodingError is multiprocessing.pool.MaybeEncodingError
    assert procpool.pool.RemoteTraceback is multiprocessing.pool.RemoteTraceback
    assert procpool.pool.AsyncResult is procpool.pool.ApplyResult


def test_default_start_method_is_forkserver() -> None:
    if procpool.get_start_method(allow_none=True) is not None:
        pytest.skip("another test left a start method set")
    assert procpool.get_start_method() == "forkserver"
    assert procpool.get_all_start_methods()[0] == "forkserver"
    assert procpool.get_context().get_start_method() == "forkserver"
    assert procpool.get_context().Process is procpool.get_context("forkserver").Process


def test_set_start_method_twice_needs_force() -> None:
    saved = procpool.get_start_method(allow_none=True)
    stdlib_saved = multiprocessing.get_start_method(allow_none=True)
    try:
        procpool.set_start_method("spawn", force=True)
        assert procpool.get_start_method() == "spawn"
        with pytest.raises(RuntimeError):
            procpool.set_start_method("fork")
        assert procpool.get_start_method() == "spawn"
        procpool.set_start_method("fork", force=True)
        assert procpool.get_start_method() == "fork"
        with pytest.raises(ValueError, match="cannot find context"):
            procpool.set_start_method("no-such-method", force=True)
    finally:
        procpool.set_start_method(saved, force=True)
    assert procpool.get_start_method(allow_none=True) == saved
    # procpool never changes the standard library's own setting.
    assert multiprocessing.get_start_method(allow_none=True) == stdlib_saved


# -- regressions found while writing these tests ---------------------------------------------


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize("kind", ["partial", "bound method"])
def test_process_target_carrying_a_queue(method: str, kind: str) -> None:
    """A target that carries a Queue (a partial, a bound method) works as in the standard library.

    procpool pickles the target with plain cloudpickle, which lacks multiprocessing's reducers
    for Connections: the child gets a bare file descriptor number and its put() goes nowhere.
    """
    ctx = procpool.get_context(method)
    q = ctx.Queue()
    if kind == "partial":
        p = ctx.Process(target=functools.partial(_put, q, kind))
    else:
        p = ctx.Process(target=_QueueHolder(q).run, args=(kind,))
    p.start()
    try:
        p.join(WAIT)
        assert p.exitcode == 0
        # The child has exited: whatever it put is already in the pipe.
        assert q.get(timeout=2) == kind
    finally:
        _reap(p)
        q.close()
        q.join_thread()


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_initargs_may_hold_queues_and_values(method: str) -> None:
    """``initargs`` may hold a Queue or a Value, as in the standard library (its documented way
    of sharing them with pool workers); procpool pickles initargs outside the spawning window."""
    ctx = procpool.get_context(method)
    q = ctx.Queue()
    counter = ctx.Value("i", 0)
    try:
        with Pool(2, _init_shared, (q, counter), context=ctx) as pool:
            assert pool.map(_use_shared, range(4)) == [0, 1, 2, 3]
        assert sorted(q.get(timeout=WAIT) for _ in range(4)) == [0, 1, 2, 3]
        assert counter.value == 4
    finally:
        q.close()
        q.join_thread()


_MAIN_SCRIPT = """
    import sys
    import procpool

    _value = None

    def init(value):
        global _value
        _value = value

    def read(_):
        return _value

    if __name__ == "__main__":
        with procpool.get_context(sys.argv[1]).Pool(2, initializer=init, initargs=("set",)) as p:
            print(p.map(read, range(2)))
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_initializer_global_in_a_script(tmp_path: Path, method: str) -> None:
    """In a script (functions in ``__main__``), the initializer's global is what tasks see.

    cloudpickle sends ``__main__`` functions by value, each pickle with its own copy of the
    globals, so the initializer sets a global that no task can see: [None, None].
    """
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(_MAIN_SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script), method],
        capture_output=True,
        text=True,
        timeout=WAIT,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['set', 'set']"


def test_a_map_unpickles_its_chunks_while_it_waits_for_the_rest(rendezvous: Rendezvous) -> None:
    """The caller waiting in map() unpickles each chunk's results as they come, while the
    workers compute the rest: here the second item waits until the first one's result has been
    unpickled in the caller (were the results unpickled only once all had come, it would wait
    forever)."""
    _ON_UNPICKLE.append(lambda: (rendezvous.accept(), rendezvous.release_all()))
    try:
        with Pool(2) as pool:
            results = pool.starmap(
                _first_or_block, [(0, rendezvous.address), (1, rendezvous.address)], chunksize=1
            )
        assert results == ["unpickled", 1]
    finally:
        _ON_UNPICKLE.clear()
