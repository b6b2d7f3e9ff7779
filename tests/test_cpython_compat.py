"""The CPython compatibility job: CPython's own multiprocessing tests, run against procpool.

For each start method this platform has, ``tests/compat/run_cpython_tests.py --subset ci`` runs
a subset of the core test classes of the standard library's ``test._test_multiprocessing`` (the
Pool and Process classes in full, samples of the Queue, Connection, Listener, Wait and Manager
ones) with the whole ``multiprocessing`` module replaced by procpool (see the runner's docstring
for exactly what is replaced, and why), in a fresh interpreter of its own: the start method is
process-global. This test starts that interpreter in a session of its own and, whatever happens,
kills what is left of the session, so no process outlives it. Where the interpreter ships
CPython's ``test_concurrent_futures`` (3.13), its ProcessPoolExecutor tests run against
procpool's executor likewise (``run_cpython_futures_tests.py --subset ci``).

The full core selection, and the comparison with the standard library itself:
``python tests/compat/run_cpython_tests.py spawn [--stdlib]`` (the same selection unpatched).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUNNER = Path(__file__).parent / "compat" / "run_cpython_tests.py"

# Tests that pass against procpool, per start method, must be at least this many: the job cannot
# pass by running nothing. The CI subset (run_cpython_tests.CI_SUBSET) holds 74 tests; CPython
# skips 4 of them under fork (fd inflation, the 2 forkserver-death tests, one fork-only skip), 3
# under spawn and 1 under forkserver (the one test that can only test the standard library, which
# has a procpool twin).
MIN_PASSED = {"fork": 70, "spawn": 71, "forkserver": 73}

# Seconds one start method's run may take (it takes 10-60 s on 2 cores), and then the test.
RUN_TIMEOUT = 300
PER_TEST_TIMEOUT = 90

HAVE_CPYTHON_TESTS = importlib.util.find_spec("test") is not None and (
    importlib.util.find_spec("test._test_multiprocessing") is not None
)


def _session_members(sid: int) -> list[str]:
    """The live processes of session ``sid`` (Linux /proc; empty where there is none)."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses.
        comm_end = stat.rindex(")")
        fields = stat[comm_end + 2 :].split()
        state, session = fields[0], int(fields[3])
        if session == sid and state not in ("Z", "X"):
            members.append(f"{entry.name} {stat[: comm_end + 1]}")
    return members


def _kill_session(sid: int) -> None:
    # The runner leads its own session and process group (start_new_session): everything it
    # started and that has not left the group is signalled, nothing else.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signal.SIGKILL)


def _run(command: list[str]) -> tuple[dict | None, str, float, list[str]]:
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_session(proc.pid)
        stdout, stderr = proc.communicate()
        stderr += f"\n*** the runner ran past {RUN_TIMEOUT} s and was killed"
    finally:
        # Helpers (the fork server, the resource tracker) leave on their own once the runner
        # has gone; anything still in the session after a grace period is a leak.
        deadline = time.monotonic() + 10
        while _session_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        leaked = _session_members(proc.pid)
        _kill_session(proc.pid)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    elapsed = time.monotonic() - started
    summary = None
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            summary = json.loads(line)
            break
    return summary, stderr, elapsed, leaked


@pytest.mark.compat
@pytest.mark.skipif(
    not HAVE_CPYTHON_TESTS,
    reason="this Python has no test._test_multiprocessing (the CPython test package)",
)
@pytest.mark.timeout(RUN_TIMEOUT + 60)
@pytest.mark.parametrize("method", multiprocessing.get_all_start_methods())
def test_cpython_multiprocessing_suite(method: str) -> None:
    summary, stderr, elapsed, leaked = _run(
        [
            sys.executable,
            str(RUNNER),
            method,
            "--subset=ci",
            f"--per-test-timeout={PER_TEST_TIMEOUT}",
        ]
    )
    summary, context = _check_clean(summary, stderr, elapsed, MIN_PASSED.get(method, 50))
    # CPython's own CI fails a run whose tests leave processes or threads behind
    # (--fail-env-changed); so does this job.
    assert not summary["env_warnings"], f"environment altered: {summary['env_warnings']}{context}"
    assert not summary["leftover_children"], f"children left running{context}"
    assert not leaked, f"processes outlived the runner: {leaked}{context}"


def _check_clean(
    summary: dict | None, stderr: str, elapsed: float, min_passed: int
) -> tuple[dict, str]:
    """Assert the run was clean and ran enough; the summary and the context for more asserts."""
    # unittest's report of the failures (from its first "=====" rule) or else the log's end.
    report = stderr.find("\n======")
    tail = stderr[report:][:8000] if report >= 0 else stderr[-8000:]
    assert summary is not None, f"the runner printed no summary ({elapsed:.0f} s); stderr:\n{tail}"
    brief = {k: summary[k] for k in ("run", "passed", "failures", "errors", "hung", "seconds")}
    context = f"\nsummary: {json.dumps(brief)}\nrunner stderr (tail):\n{tail}"
    assert summary["target"] == "procpool", context
    assert summary.get("fatal") is None, f"{summary['fatal']}{context}"
    assert summary["hung"] is None, f"{summary['hung']} hung{context}"
    assert not summary["failures"], f"CPython tests failed: {summary['failures']}{context}"
    assert not summary["errors"], f"CPython tests raised: {summary['errors']}{context}"
    assert not summary["unexpected_successes"], context
    assert summary["passed"] >= min_passed, (
        f"only {summary['passed']} tests passed; skipped: {summary['skipped']}{context}"
    )
    return summary, context


HAVE_FUTURES_TESTS = importlib.util.find_spec("test") is not None and (
    importlib.util.find_spec("test.test_concurrent_futures") is not None
)
FUTURES_RUNNER = Path(__file__).parent / "compat" / "run_cpython_futures_tests.py"
# The forkserver third of CPython's ProcessPoolExecutor tests (3.13: 63 run; CPython skips 2; 12
# assert the standard library's behaviour where procpool differs on purpose and are expected to
# fail: the runner lists them with the reasons).
FUTURES_MIN_PASSED = 49


@pytest.mark.compat
@pytest.mark.skipif(
    not HAVE_FUTURES_TESTS,
    reason="this Python ships no test.test_concurrent_futures package (CPython 3.13 does)",
)
@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_cpython_concurrent_futures_suite() -> None:
    """CPython's ProcessPoolExecutor tests against procpool's executor (forkserver classes)."""
    summary, stderr, elapsed, leaked = _run(
        [
            sys.executable,
            str(FUTURES_RUNNER),
            "--subset=ci",
            f"--per-test-timeout={PER_TEST_TIMEOUT}",
        ]
    )
    summary, context = _check_clean(summary, stderr, elapsed, FUTURES_MIN_PASSED)
    # (Threads of executors that tests drop without shutting down end a moment later than
    # CPython's per-test thread check looks: those warnings are not counted here.)
    assert not summary["leftover_children"], f"children left running{context}"
    assert not leaked, f"processes outlived the runner: {leaked}{context}"
