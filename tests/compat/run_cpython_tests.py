"""Run CPython's own multiprocessing tests with the whole module replaced by procpool.

    python tests/compat/run_cpython_tests.py METHOD [--stdlib] [--subset ci] [--only SUBSTRING ...]

METHOD is a start method (fork, spawn, forkserver). The run happens in this process only: start
methods are process-global, so each method gets a fresh interpreter (the pytest wrapper,
tests/test_cpython_compat.py, starts one per method). The unittest verbose log goes to stderr;
the last line on stdout is one JSON object (exit status 0 if nothing failed, 1 if something did,
2 if the run could not start, 3 if a test hung):

    {"method": ..., "target": "procpool" | "stdlib", "run": N, "passed": N,
     "failures": [id, ...], "errors": [id, ...], "skipped": [[id, reason], ...],
     "expected_failures": [...], "unexpected_successes": [...], "hung": id | null,
     "leftover_children": [...], "env_warnings": [...], "warnings": [...], "seconds": S,
     "slowest": [[id, seconds], ...]}

How procpool is put under test. ``test._test_multiprocessing`` (the standard library's test
module) reaches everything through its module global ``multiprocessing`` and through the
``ProcessesMixin`` class attributes bound when it was imported. Both are replaced:

* ``tm.multiprocessing`` becomes the ``procpool`` package itself (no shim): every name and
  submodule the tests use at run time (``multiprocessing.connection.wait``,
  ``multiprocessing.managers.SyncManager``, ``multiprocessing.set_start_method``...) is
  procpool's, as it would be after ``import procpool as multiprocessing``.
* Each ``ProcessesMixin`` attribute (``Process``, ``Pool``, ``Queue``, ``Pipe``, ``Lock``,
  ``connection``...) and ``ManagerMixin.Process`` become procpool's names, before the test classes
  are built. (The manager tests' ``Pool`` comes from ``procpool.Manager()``, so it is procpool's.)
* ``_UpperCaser`` (used by ``test_subclassing``) subclasses ``multiprocessing.Process`` at import
  time, i.e. the standard library's class. It is rebuilt with the same body on top of
  ``procpool.Process``, so ``test_subclassing`` really subclasses procpool's Process.
* ``test_worker_finalization_via_atexit_handler_of_multiprocessing`` runs a script that says
  ``from multiprocessing import Pool`` in a fresh interpreter: it can only test the standard
  library. Against procpool it is skipped (with that reason) and replaced by
  ``ProcpoolAdaptedTests.test_worker_finalization_via_atexit_handler_of_procpool``, the same
  script with ``from procpool import Pool``.

``--stdlib`` runs the very same selection against the unpatched standard library, so the skip
lists (and the pass counts) of both can be compared.

Children. The generated test classes live in this file imported as the module
``run_cpython_tests`` (never as ``__main__``): under spawn and forkserver a child unpickles its
target (a classmethod of a test class) by importing that module, which replaces the module in
the child too, so grandchildren started by test code are procpool's too. The target (procpool or the
standard library) and the start method travel to children in environment variables.

Every test runs under a watchdog: a test that runs past ``--per-test-timeout`` seconds gets every
thread's traceback dumped to stderr, the JSON line (``"hung": id``) printed, its children killed,
and the interpreter exits with status 3.
"""

from __future__ import annotations

import os
import sys

MODULE_NAME = "run_cpython_tests"
TARGET_ENV = "PROCPOOL_COMPAT_TARGET"  # "procpool" (default) or "stdlib"
METHOD_ENV = "PROCPOOL_COMPAT_METHOD"

# The CPython test classes run, by the name install_tests_in_module_dict gives them. The core
# selection: the Process, Queue, Pool, Connection, Listener, Wait and Manager tests.
MIXIN_CLASSES = (
    "WithProcessesTestPool",
    "WithProcessesTestPoolWorkerErrors",
    "WithProcessesTestPoolWorkerLifetime",
    "WithProcessesTestProcess",
    "WithProcessesTestSubclassingProcess",
    "WithProcessesTestQueue",
    "WithProcessesTestConnection",
    "WithProcessesTestListener",
    "WithProcessesTestListenerClient",
    "WithProcessesTestPoll",
    "WithProcessesTestPicklingConnections",
    "WithManagerTestQueue",
    "WithManagerTestPool",
    "WithManagerTestMyManager",
    "WithManagerTestRemoteManager",
    "WithManagerTestManagerRestart",
    "WithManagerTestLock",
    "WithManagerTestSemaphore",
    "WithManagerTestCondition",
    "WithManagerTestEvent",
    "WithManagerTestBarrier",
    "WithManagerTestContainers",
)
# Plain TestCase classes of the CPython module: (class name, test names or None for all).
PLAIN_TESTS = (
    ("TestPoolNotLeakOnFailure", None),
    ("TestInitializers", None),
    ("TestWait", None),
    ("TestTimeouts", None),
    ("TestSimpleQueue", None),
    ("OtherTest", None),
)
# What the CI job runs (``--subset ci``): the Pool and Process classes in full, and a sample of
# the others that exercises each submodule (connection, queues, managers) under the start
# method, so the job stays within its time budget; the full selection is the default.
CI_SUBSET = (
    "WithProcessesTestPool",
    "WithProcessesTestPoolWorkerErrors",
    "WithProcessesTestPoolWorkerLifetime",
    "WithProcessesTestProcess",
    "WithProcessesTestSubclassingProcess",
    "TestPoolNotLeakOnFailure",
    "TestInitializers",
    "WithProcessesTestQueue.test_put",
    "WithProcessesTestQueue.test_get",
    "WithProcessesTestQueue.test_fork",
    "WithProcessesTestConnection.test_connection",
    "WithProcessesTestConnection.test_spawn_close",
    "WithProcessesTestListener.test_multiple_bind",
    "WithProcessesTestListenerClient.test_listener_client",
    "WithProcessesTestPicklingConnections.test_pickling",
    "TestWait.test_wait",
    "WithManagerTestPool.test_apply",
    "WithManagerTestPool.test_map",
    "WithManagerTestQueue.test_put",
    "WithManagerTestMyManager.test_mymanager",
)
STDLIB_ONLY_TEST = "test_worker_finalization_via_atexit_handler_of_multiprocessing"

_installed = False


def _target() -> str:
    return os.environ.get(TARGET_ENV, "procpool")


def _install() -> None:
    """Patch the CPython test module (for procpool) and build its test classes here."""
    global _installed
    if _installed:
        return
    _installed = True
    import test._test_multiprocessing as tm

    if _target() == "procpool":
        import procpool

        # The whole module is procpool: every `multiprocessing.X` the tests evaluate at run
        # time, submodules included (procpool.connection, procpool.managers...).
        tm.multiprocessing = procpool
        # The mixins bound the standard library's names when tm was imported: rebind each to
        # procpool's name of the same name.
        for name, value in list(vars(tm.ProcessesMixin).items()):
            if name.startswith("_") or not hasattr(procpool, name):
                continue
            mine = getattr(procpool, name)
            setattr(
                tm.ProcessesMixin,
                name,
                staticmethod(mine) if isinstance(value, staticmethod) else mine,
            )
        tm.ManagerMixin.Process = procpool.Process
        # _UpperCaser subclassed the standard library's Process when tm was imported: rebuild
        # it, same body, on procpool's. Its methods' globals are tm's, where `multiprocessing`
        # is now procpool, so its `multiprocessing.Process.__init__(self)` is procpool's too.
        body = {
            k: v for k, v in vars(tm._UpperCaser).items() if k not in ("__dict__", "__weakref__")
        }
        upper = type("_UpperCaser", (procpool.Process,), body)
        upper.__module__ = MODULE_NAME  # a child unpickling it imports this module, so procpool
        upper.__qualname__ = "_UpperCaser"
        globals()["_UpperCaser"] = upper
        tm._UpperCaser = upper

    method = os.environ.get(METHOD_ENV, "spawn")
    tm.install_tests_in_module_dict(globals(), method)

    for name, _tests in PLAIN_TESTS:
        cls = type(name, (getattr(tm, name),), {})
        cls.__module__ = MODULE_NAME
        globals()[name] = cls

    if _target() == "procpool":
        import unittest

        cls = globals()["WithProcessesTestPoolWorkerLifetime"]
        setattr(
            cls,
            STDLIB_ONLY_TEST,
            unittest.skip(
                "runs `from multiprocessing import Pool` in a fresh interpreter, so it tests only"
                " the standard library; see ProcpoolAdaptedTests"
            )(getattr(cls, STDLIB_ONLY_TEST)),
        )
        globals()["ProcpoolAdaptedTests"] = _adapted_tests()

    _self_check(tm)


def _adapted_tests():
    import unittest

    import test.support.script_helper

    class ProcpoolAdaptedTests(unittest.TestCase):
        """CPython tests that hard-code the standard library, rewritten for procpool."""

        def test_worker_finalization_via_atexit_handler_of_procpool(self):
            # _TestPoolWorkerLifetime.test_worker_finalization_via_atexit_handler_of_multiprocessing
            # (bpo-38744, bpo-39360) with procpool's Pool: a pool still referenced at exit must
            # not hang or crash the interpreter's shutdown.
            cmd = """if 1:
                from procpool import Pool
                problem = None
                class A:
                    def __init__(self):
                        self.pool = Pool(processes=1)
                def test():
                    global problem
                    problem = A()
                    problem.pool.map(float, tuple(range(10)))
                if __name__ == "__main__":
                    test()
            """
            # assert_python_ok fails the test unless the interpreter exits with status 0. The
            # child gets this interpreter's import path, so it imports the procpool under test.
            path = os.pathsep.join(p for p in sys.path if p)
            test.support.script_helper.assert_python_ok("-c", cmd, PYTHONPATH=path)

    ProcpoolAdaptedTests.__module__ = MODULE_NAME
    ProcpoolAdaptedTests.__qualname__ = "ProcpoolAdaptedTests"
    return ProcpoolAdaptedTests


def _self_check(tm) -> None:
    """Fail loudly if the run would not test what it claims to test."""
    import multiprocessing

    g = globals()
    if _target() == "procpool":
        import procpool

        checks = {
            "tm.multiprocessing": tm.multiprocessing is procpool,
            "tm.multiprocessing.pool.Pool": tm.multiprocessing.pool.Pool is procpool.Pool,
            "mixin Pool": g["WithProcessesTestPool"].Pool is procpool.Pool,
            "mixin Queue": g["WithProcessesTestQueue"].Queue is procpool.Queue,
            "manager Process": g["WithManagerTestPool"].Process is procpool.Process,
            "mixin Process": g["WithProcessesTestProcess"].Process is procpool.Process,
            "_UpperCaser": issubclass(tm._UpperCaser, procpool.Process),
        }
    else:
        checks = {
            "tm.multiprocessing": tm.multiprocessing is multiprocessing,
            "mixin Process": g["WithProcessesTestProcess"].Process is multiprocessing.Process,
        }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise RuntimeError(f"compat runner: the patching is not what it should be: {bad}")


# -- running ---------------------------------------------------------------------------------


def _build_suite(only):
    import unittest

    loader = unittest.TestLoader()
    g = globals()
    suite = unittest.TestSuite()
    for name in MIXIN_CLASSES:
        suite.addTests(loader.loadTestsFromTestCase(g[name]))
    for name, tests in PLAIN_TESTS:
        if tests is None:
            suite.addTests(loader.loadTestsFromTestCase(g[name]))
        else:
            suite.addTests(g[name](test) for test in tests)
    if "ProcpoolAdaptedTests" in g:
        suite.addTests(loader.loadTestsFromTestCase(g["ProcpoolAdaptedTests"]))
    if only:
        suite = unittest.TestSuite(t for t in _flatten(suite) if any(s in t.id() for s in only))
    return suite


def _flatten(suite):
    import unittest

    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _flatten(item)
        else:
            yield item


def main(argv) -> int:
    import argparse

    from _unittest_run import run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method")
    parser.add_argument("--stdlib", action="store_true", help="test the unpatched stdlib")
    parser.add_argument("--only", action="append", default=[], help="run tests whose id has this")
    parser.add_argument("--subset", choices=["ci"], help="run only the CI subset (CI_SUBSET)")
    parser.add_argument("--per-test-timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    g = globals()
    suite = _build_suite(args.only)
    if args.subset == "ci":
        chosen = {f"{MODULE_NAME}.{name}" for name in (*CI_SUBSET, "ProcpoolAdaptedTests")}
        suite = type(suite)(
            t for t in _flatten(suite) if {t.id(), t.id().rpartition(".")[0]} & chosen
        )
    return run(
        suite,
        {"method": args.method, "target": _target()},
        args.per_test_timeout,
        g["setUpModule"],
        g["tearDownModule"],
    )


def _entry() -> int:
    import argparse

    # Only the first pass over argv, to set the environment before the module is imported.
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("method")
    parser.add_argument("--stdlib", action="store_true")
    known, _ = parser.parse_known_args()
    os.environ[TARGET_ENV] = "stdlib" if known.stdlib else "procpool"
    os.environ[METHOD_ENV] = known.method
    import multiprocessing

    if known.method not in multiprocessing.get_all_start_methods():
        print(f"start method {known.method!r} is not available here", file=sys.stderr)
        return 2
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    import run_cpython_tests  # the real module, whose classes children import

    return run_cpython_tests.main(sys.argv[1:])


if __name__ == MODULE_NAME:
    _install()
elif __name__ == "__main__":
    sys.exit(_entry())
