"""``import procpool as multiprocessing``: every name and submodule, and the standard types.

procpool's Pool and executor are instances of the standard library's classes for ``isinstance``
(code such as dask's schedulers branches on them) without running any of their machinery; the
submodules procpool adds nothing to are the standard library's own module objects.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import multiprocessing
import multiprocessing.pool
import pickle
import pkgutil
import sys
from pathlib import Path
from types import FunctionType

import pytest

import procpool

TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:  # workers find the helpers through sys.path (spawn copies it)
    sys.path.insert(0, TESTS_DIR)

from _helpers import square  # noqa: E402
from _pools import WAIT  # noqa: E402

OWN = {"pool", "managers", "context"}  # the submodules procpool adds to


def stdlib_submodules() -> list[str]:
    names = []
    for info in pkgutil.iter_modules(multiprocessing.__path__):
        try:
            importlib.import_module(f"multiprocessing.{info.name}")
        except ImportError:  # another platform's (popen_spawn_win32)
            continue
        names.append(info.name)
    return names


def test_every_public_name_of_multiprocessing_is_there() -> None:
    missing = [
        name
        for name in dir(multiprocessing)
        if not name.startswith("_") and name != "sys" and not hasattr(procpool, name)
    ]
    assert missing == []


@pytest.mark.parametrize("name", stdlib_submodules())
def test_every_submodule_is_there_with_every_name(name: str) -> None:
    standard = importlib.import_module(f"multiprocessing.{name}")
    mine = importlib.import_module(f"procpool.{name}")
    assert getattr(procpool, name) is mine  # reachable as an attribute too
    if name in OWN:
        assert mine is not standard
        missing = [n for n in dir(standard) if not n.startswith("__") and not hasattr(mine, n)]
        assert missing == []
    else:
        assert mine is standard


def test_from_imports_and_the_stdlib_names_procpool_keeps() -> None:
    from procpool.connection import wait
    from procpool.pool import Pool, ThreadPool, worker
    from procpool.queues import Queue

    assert wait is multiprocessing.connection.wait
    assert Queue is multiprocessing.queues.Queue
    assert worker is multiprocessing.pool.worker  # type: ignore[attr-defined]
    assert ThreadPool is multiprocessing.pool.ThreadPool
    assert Pool is procpool.Pool
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        procpool.pool.nope  # type: ignore[attr-defined]  # noqa: B018


def test_a_spawned_child_uses_the_submodules() -> None:
    ctx = procpool.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_answer_through_wait, args=(child,))
    process.start()
    try:
        parent.send(6)
        assert parent.poll(WAIT)
        assert parent.recv() == 36
    finally:
        process.join(WAIT)
    assert process.exitcode == 0


def _answer_through_wait(conn: multiprocessing.connection.Connection) -> None:
    from procpool.connection import wait

    assert wait([conn], WAIT) == [conn]
    value = conn.recv()
    conn.send(value * value)


def test_contexts_and_managers_give_procpools_pool() -> None:
    ctx = procpool.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert isinstance(pool, procpool.Pool)
        assert pool.apply(square, (3,)) == 9
    with procpool.Manager() as manager:
        assert isinstance(manager, procpool.managers.SyncManager)
        proxy = manager.Pool(1)
        # str() of a proxy is its referent's str, made in the manager's process.
        assert str(proxy).startswith("<procpool.Pool state=RUN")
        assert proxy.apply_async(square, (4,)).get(WAIT) == 16
        assert proxy.map(square, range(3)) == [0, 1, 4]
        proxy.terminate()
    # The standard library's SyncManager is left as it was.
    assert multiprocessing.managers.SyncManager._registry["Pool"][0] is multiprocessing.pool.Pool


@pytest.mark.parametrize(
    ("mine", "standard"),
    [
        (procpool.Pool, multiprocessing.pool.Pool),
        (procpool.ProcessPoolExecutor, concurrent.futures.ProcessPoolExecutor),
    ],
)
def test_no_method_of_the_standard_class_is_inherited(mine: type, standard: type) -> None:
    assert issubclass(mine, standard)
    inherited = [
        name
        for name, value in vars(standard).items()
        if isinstance(value, FunctionType | staticmethod | classmethod) and name not in vars(mine)
    ]
    assert inherited == []


def test_pool_is_a_standard_pool_and_blocks_the_standard_machinery() -> None:
    with procpool.Pool(1) as pool:
        assert isinstance(pool, multiprocessing.pool.Pool)
        with pytest.raises(NotImplementedError, match="_maintain_pool"):
            pool._maintain_pool()  # type: ignore[attr-defined]
        with pytest.raises(NotImplementedError):
            pickle.dumps(pool)
        assert pool.apply(square, (5,)) == 25


def test_dask_takes_the_pool_path() -> None:
    dask = pytest.importorskip("dask")
    with procpool.Pool(2) as pool:
        values = [dask.delayed(square)(i) for i in range(4)]
        assert dask.compute(*values, scheduler="processes", pool=pool) == (0, 1, 4, 9)
