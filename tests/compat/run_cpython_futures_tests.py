"""Run CPython's own ProcessPoolExecutor tests against procpool's executor.

    python tests/compat/run_cpython_futures_tests.py [--stdlib] [--subset ci] [--only SUBSTRING ...]

Needs an interpreter that ships ``test.test_concurrent_futures`` (CPython 3.13 ships it as a
package; the 3.11 and 3.12 builds here ship none). Every test class of that package whose name
says ``ProcessPool`` runs, for the fork, spawn and forkserver start methods the tests choose
themselves (through ``mp_context``). Output as in ``_unittest_run``: the unittest log on stderr,
one JSON summary line on stdout.

How the executor is put under test: ``concurrent.futures.ProcessPoolExecutor`` (the module
attribute, which the tests read both when their mixin classes are built and inside test bodies)
is replaced by ``procpool.ProcessPoolExecutor`` before the test package is imported. Children
need nothing patched: they only run the tests' module-level functions.

Tests in ``EXPECTED_FAILURES`` assert the standard library's behaviour where procpool differs on
purpose; they are marked as expected failures, so the run is clean only if every other test
passes and each of those still fails (a difference that went away is reported).
"""

from __future__ import annotations

import os
import sys

# "<class>.<test>" -> why procpool differs; the class is named without its start method (the
# test fails under all three) or in full (it fails under that start method only).
EXPECTED_FAILURES = {
    "ProcessPoolExecutorTest.test_killed_child": (
        "asserts that a killed worker breaks the executor (BrokenProcessPool for every future "
        "and for later submits); procpool fails only that task, with WorkerLostError, and "
        "goes on"
    ),
    "ProcessPoolExecutorTest.test_idle_process_reuse_one": (
        "asserts workers are started on demand (one task, one process); procpool starts all "
        "max_workers workers with the executor"
    ),
    "ProcessPoolExecutorTest.test_idle_process_reuse_multiple": (
        "asserts workers are started on demand; procpool starts them all at once"
    ),
    "ProcessPoolSpawnProcessPoolShutdownTest.test_processes_terminate": (
        "asserts three workers exist after three submits (on-demand start) under spawn; "
        "procpool starts all max_workers workers"
    ),
    "ProcessPoolForkserverProcessPoolShutdownTest.test_processes_terminate": (
        "likewise under forkserver"
    ),
    "ProcessPoolForkProcessPoolExecutorTest.test_max_tasks_per_child": (
        "asserts max_tasks_per_child is refused with the fork start method; "
        "procpool's pool supports it there"
    ),
    "FailingInitializerTest.test_initializer": (
        "asserts the worker logs the initializer's exception through the logging module; "
        "procpool reports it to the parent instead, as the cause of InitializerError (which "
        "the test's other checks accept: BrokenExecutor, _broken, submit refused)"
    ),
    "ProcessPoolExecutorTest.test_max_tasks_per_child_defaults_to_spawn_context": (
        "asserts max_tasks_per_child switches the default start method to spawn; procpool "
        "keeps its own default (forkserver), with which max_tasks_per_child is safe"
    ),
}
# Faults the standard library answers by breaking the whole pool (BrokenProcessPool for every
# future, and for later submits); procpool fails only the task concerned, with the error that
# names what happened, and the executor goes on.
_DECODE = (
    "asserts BrokenProcessPool; procpool fails only this task, with TaskDecodeError (the "
    "task's arguments or its result could not be unpickled), and the executor goes on"
)
_ENCODE = (
    "asserts the worker's own pickling exception; procpool fails only this task with "
    "multiprocessing.pool.MaybeEncodingError naming it, as procpool's Pool does"
)
EXPECTED_FAILURES.update(
    {
        "ExecutorDeadlockTest.test_error_at_task_unpickle": _DECODE,
        "ExecutorDeadlockTest.test_exit_at_task_unpickle": _DECODE,
        "ExecutorDeadlockTest.test_error_during_result_unpickle_in_result_handler": (_DECODE),
        "ExecutorDeadlockTest.test_exit_during_result_unpickle_in_result_handler": (_DECODE),
        "ExecutorDeadlockTest.test_error_during_result_pickle_on_worker": _ENCODE,
        "ExecutorDeadlockTest.test_exit_during_result_pickle_on_worker": _ENCODE,
    }
)


def _install() -> None:
    import concurrent.futures

    import procpool

    concurrent.futures.ProcessPoolExecutor = procpool.ProcessPoolExecutor


def _suite(only):
    import importlib
    import pkgutil
    import unittest

    import test.test_concurrent_futures as package

    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("test_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name, cls in vars(module).items():
            if (
                "ProcessPool" in name
                and isinstance(cls, type)
                and issubclass(cls, unittest.TestCase)
            ):
                suite.addTests(loader.loadTestsFromTestCase(cls))
    tests = [t for t in _flatten(suite) if not only or any(s in t.id() for s in only)]
    return unittest.TestSuite(tests)


def _flatten(suite):
    import unittest

    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _flatten(item)
        else:
            yield item


def _mark_expected_failures(suite) -> None:
    import unittest

    for case in suite:
        cls_name = type(case).__name__
        for key in EXPECTED_FAILURES:
            cls_part, _, test_name = key.partition(".")
            # A key names the class without its start method (all three), or in full (one).
            if case._testMethodName == test_name and cls_part in (
                cls_name,
                _strip_method(cls_name),
            ):
                setattr(type(case), test_name, unittest.expectedFailure(_copy(case, test_name)))


def _copy(case, test_name):
    """The test method as a new function: expectedFailure marks the function it is given, and
    the classes of the three start methods share one."""
    import functools

    method = getattr(type(case), test_name)

    @functools.wraps(method)
    def test(self):
        return method(self)

    return test


def _strip_method(cls_name: str) -> str:
    # create_executor_tests names classes "ProcessPool<Fork|Spawn|Forkserver><the mixin's name>".
    for prefix in ("ProcessPoolForkserver", "ProcessPoolFork", "ProcessPoolSpawn"):
        if cls_name.startswith(prefix):
            return cls_name[len(prefix) :]
    return cls_name


def main(argv) -> int:
    import argparse
    import gc
    import importlib.util

    from _unittest_run import run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stdlib", action="store_true", help="test the unpatched stdlib")
    parser.add_argument("--only", action="append", default=[], help="run tests whose id has this")
    parser.add_argument(
        "--subset", choices=["ci"], help="ci: the forkserver classes only (a third of the run)"
    )
    parser.add_argument("--per-test-timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    if args.subset == "ci":
        args.only.append(".ProcessPoolForkserver")
    if importlib.util.find_spec("test.test_concurrent_futures") is None:
        print("this Python ships no test.test_concurrent_futures package", file=sys.stderr)
        return 2
    if not args.stdlib:
        _install()
    suite = _suite(args.only)
    if not args.stdlib:
        _mark_expected_failures(_flatten(suite))
    info = {"suite": "test_concurrent_futures", "target": "stdlib" if args.stdlib else "procpool"}
    # An executor that a failing test never shut down is released when it is collected, as the
    # standard library's is; collecting after each test keeps its workers from outliving it
    # (the module's cleanup waits for every process that shares the resource tracker).
    return run(suite, info, args.per_test_timeout, after_test=gc.collect)


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    sys.exit(main(sys.argv[1:]))
