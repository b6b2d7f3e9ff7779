"""What the CPython-test runners share: run a unittest suite under a watchdog, report as JSON.

The runners (``run_cpython_tests.py`` for multiprocessing, ``run_cpython_futures_tests.py`` for
concurrent.futures) build a suite and call :func:`run`; it prints the unittest log to stderr and
one JSON summary line to stdout, and returns the exit status (0 clean, 1 failures, 2 could not
start, 3 a test hung: the watchdog then dumps every thread's traceback and exits).
"""

from __future__ import annotations

import os
import sys


class Watchdog:
    """Ends the run, loudly, when one test runs too long."""

    def __init__(self, limit, report):
        import threading

        self.limit = limit
        self.report = report
        self.cond = threading.Condition()
        self.current = None
        self.deadline = None
        thread = threading.Thread(target=self._run, name="compat-watchdog", daemon=True)
        thread.start()

    def start(self, test_id):
        import time

        with self.cond:
            self.current, self.deadline = test_id, time.monotonic() + self.limit
            self.cond.notify()

    def stop(self):
        with self.cond:
            self.current = self.deadline = None
            self.cond.notify()

    def _run(self):
        import faulthandler
        import time

        with self.cond:
            while True:
                if self.deadline is None:
                    self.cond.wait()
                    continue
                left = self.deadline - time.monotonic()
                if left > 0:
                    self.cond.wait(left)
                    continue
                break
            hung = self.current
        sys.stderr.write(f"\n*** compat runner: {hung} ran past {self.limit:g} s; tracebacks:\n")
        sys.stderr.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        self.report(hung)
        os._exit(3)


def kill_children(wait=True):
    """Kill what this process still has running (its own children only); return their names."""
    import multiprocessing

    left = []
    for child in multiprocessing.active_children():
        left.append(f"{child.name} pid={child.pid}")
        try:
            child.kill()
        except Exception:  # already gone, or not started yet
            continue
        if wait:
            child.join(5)
    return left


def run(suite, info, per_test_timeout, setup=None, teardown=None, after_test=None) -> int:
    """Run ``suite``; ``info`` (method, target...) heads the JSON summary; ``after_test()`` runs
    after each test."""
    import collections
    import json
    import time
    import unittest
    import warnings

    import test.support

    started = time.monotonic()
    result_holder = {}
    env_warnings = []
    seen_warnings = collections.Counter()
    starts, durations = {}, {}

    def summary(hung=None, leftover=()):
        r = result_holder.get("result")
        ids = lambda pairs: [t.id() for t, _ in pairs]  # noqa: E731
        run = r.testsRun if r else 0
        out = {
            **info,
            "python": sys.version.split()[0],
            "run": run,
            "passed": r.passed if r else 0,
            "failures": ids(r.failures) if r else [],
            "errors": ids(r.errors) if r else [],
            "skipped": [[t.id(), reason] for t, reason in r.skipped] if r else [],
            "expected_failures": ids(r.expectedFailures) if r else [],
            "unexpected_successes": [t.id() for t in r.unexpectedSuccesses] if r else [],
            "hung": hung,
            "leftover_children": list(leftover),
            "env_warnings": env_warnings,
            "warnings": [f"{n}x {w}" for w, n in seen_warnings.items()],
            "seconds": round(time.monotonic() - started, 1),
            "slowest": [
                [test_id, round(seconds, 1)]
                for test_id, seconds in sorted(
                    [*durations.items(), *((t, time.monotonic() - s) for t, s in starts.items())],
                    key=lambda kv: -kv[1],
                )[:8]
            ],
        }
        if "fatal" in result_holder:
            out["fatal"] = result_holder["fatal"]
        return out

    def emit(out):
        sys.stderr.flush()
        # On a line of its own: CPython's verbose tests print timings without a newline.
        sys.stdout.write("\n" + json.dumps(out) + "\n")
        sys.stdout.flush()

    def report_hang(hung):
        # The hung test's thread may still be starting processes: kill, don't wait, and exit.
        emit(summary(hung=hung, leftover=kill_children(wait=False)))

    # What CPython's own checks would only print (dangling processes and threads) is collected.
    real_print_warning = test.support.print_warning

    def print_warning(msg):
        env_warnings.append(str(msg))
        real_print_warning(msg)

    # print_warning reads its stream from an attribute of the module-level function.
    print_warning.__dict__.update(real_print_warning.__dict__)
    test.support.print_warning = print_warning

    real_showwarning = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        seen_warnings[f"{category.__name__}: {message} ({filename}:{lineno})"] += 1
        real_showwarning(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning

    watchdog = Watchdog(per_test_timeout, report_hang)

    class Result(unittest.TextTestResult):
        passed = 0

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            result_holder["result"] = self  # a hang reports what ran before it

        def addSuccess(self, test):
            super().addSuccess(test)
            self.passed += 1

        def startTest(self, test):
            watchdog.start(test.id())
            starts[test.id()] = time.monotonic()
            super().startTest(test)

        def stopTest(self, test):
            super().stopTest(test)
            if after_test is not None:
                after_test()
            # (Python 3.12+ calls stopTest without startTest for a test skipped by decorator.)
            if test.id() in starts:
                durations[test.id()] = time.monotonic() - starts.pop(test.id())
            watchdog.stop()

    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2, resultclass=Result)
    try:
        if setup is not None:
            setup()
    except unittest.SkipTest as exc:
        result_holder["fatal"] = f"setUpModule skipped the module: {exc}"
        emit(summary())
        return 2
    try:
        result_holder["result"] = runner.run(suite)
    finally:
        watchdog.start("tearDownModule")
        try:
            if teardown is not None:
                teardown()
        except Exception as exc:  # reported, not hidden
            result_holder["fatal"] = f"tearDownModule raised {exc!r}"
        watchdog.stop()
    if test.support.environment_altered and not env_warnings:
        env_warnings.append("test.support.environment_altered was set")
    out = summary(leftover=kill_children())
    emit(out)
    clean = not (out["failures"] or out["errors"] or out["leftover_children"] or "fatal" in out)
    return 0 if clean else 1
