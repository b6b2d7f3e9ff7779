"""``procpool map``: results, failures, exit statuses, options and Ctrl-C, as a user runs it."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _cli import LIMIT, env, procpool
from _helpers import wait_gone

TASKS = textwrap.dedent(
    """
    import os, sys, threading

    def square(x):
        return int(x) ** 2

    def picky(x):
        if x == "3":
            raise ValueError("three is not welcome\\nsecond line of the message")
        return x.upper()

    def total(numbers):
        return {"sum": sum(numbers), "count": len(numbers)}

    def hang(x):
        if x == "stuck":
            threading.Event().wait()
        return x

    def die(x):
        if x == "die":
            os._exit(3)
        return x

    def die_once(marker):
        # The first attempt kills its worker; the retry finds the marker and returns.
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)
        return "second attempt"

    def report_and_hang(fifo):
        with open(fifo, "w") as f:
            f.write(f"{os.getpid()}\\n")
        threading.Event().wait()
    """
)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "tasks.py").write_text(TASKS)
    return tmp_path


def test_file_function_in_input_order(work: Path) -> None:
    result = procpool("map", "./tasks.py:square", *map(str, range(12)), cwd=work)
    assert result.stdout.decode().split() == [str(i * i) for i in range(12)]
    assert (result.returncode, result.stderr) == (0, b"")


def test_module_function_over_stdin_with_chunks(work: Path) -> None:
    items = "".join(f"{i}\n" for i in range(25))
    for args in [("-",), ()]:
        result = procpool("map", "--chunksize", "4", "tasks:square", *args, cwd=work, stdin=items)
        assert result.stdout.decode().split() == [str(i * i) for i in range(25)]
        assert result.returncode == 0


def test_unordered_gives_every_result(work: Path) -> None:
    result = procpool(
        "map", "--unordered", "-j", "3", "tasks:square", *map(str, range(30)), cwd=work
    )
    assert sorted(map(int, result.stdout.split())) == [i * i for i in range(30)]
    assert result.returncode == 0


def test_failures_are_reported_and_the_rest_goes_on(work: Path) -> None:
    result = procpool("map", "tasks:picky", "1", "2", "3", "4", cwd=work)
    assert result.stdout.decode().split() == ["1", "2", "4"]
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert stderr == "procpool map: item '3' failed: ValueError: three is not welcome\n"
    verbose = procpool("map", "-v", "tasks:picky", "3", cwd=work).stderr.decode()
    assert "Traceback (most recent call last)" in verbose
    assert 'raise ValueError("three is not welcome' in verbose  # the failing line, from the worker


def test_json_in_and_out(work: Path) -> None:
    result = procpool(
        "map", "--json", "tasks:total", "-", cwd=work, stdin="[1, 2, 3]\n[]\nnot json\n"
    )
    out = result.stdout.decode().splitlines()
    assert [json.loads(line) for line in out] == [{"sum": 6, "count": 3}, {"sum": 0, "count": 0}]
    assert result.returncode == 1
    assert "item 'not json' failed: JSONDecodeError" in result.stderr.decode()


def test_timeout_stops_one_item(work: Path) -> None:
    # 2 s: room for the quick items on a loaded machine; the stuck one takes all of it.
    result = procpool("map", "--timeout", "2", "tasks:hang", "a", "stuck", "b", cwd=work)
    assert result.stdout.decode().split() == ["a", "b"]
    assert result.returncode == 1
    assert "item 'stuck' failed: TaskTimeoutError" in result.stderr.decode()


def test_dead_worker_fails_its_item_and_retries_rerun_it(work: Path) -> None:
    result = procpool("map", "tasks:die", "a", "die", "b", cwd=work)
    assert result.stdout.decode().split() == ["a", "b"]
    assert result.returncode == 1
    assert "item 'die' failed: WorkerLostError" in result.stderr.decode()
    twice = procpool("map", "-v", "--retries", "1", "tasks:die", "die", cwd=work).stderr.decode()
    assert "earlier attempts at this task failed" in twice  # -v: the record of the attempts
    retried = procpool("map", "--retries", "1", "tasks:die_once", str(work / "marker"), cwd=work)
    assert (retried.stdout, retried.returncode) == (b"second attempt\n", 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nosuchmodule:f", "1"), "cannot load 'nosuchmodule:f'"),
        (("tasks", "1"), "FUNC must be MODULE:NAME"),
        (("tasks:nothing", "1"), "cannot load 'tasks:nothing'"),
        (("./missing.py:f", "1"), "no such file"),
        (("--timeout", "1", "--chunksize", "2", "tasks:square", "1"), "--chunksize 1"),
        (("--chunksize", "0", "tasks:square", "1"), "--chunksize must be 1+"),
    ],
)
def test_usage_errors(work: Path, args: tuple[str, ...], message: str) -> None:
    result = procpool("map", *args, cwd=work)
    assert result.returncode == 2
    assert message in result.stderr.decode()


def test_ctrl_c_exits_130_and_leaves_no_worker(work: Path) -> None:
    fifo = work / "started"
    os.mkfifo(fifo)
    # Opened for reading and writing: the tasks' opens for writing do not block, and the FIFO
    # is readable only when a task has written to it (never at a writer's end of file).
    started = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    # A new session, so that the test can signal the command's whole process group as a
    # terminal's Ctrl-C does (the workers receive the SIGINT too).
    with subprocess.Popen(
        [sys.executable, "-m", "procpool", "map", "-j", "2", "tasks:report_and_hang"]
        + [str(fifo)] * 2,
        cwd=work,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    ) as command:
        try:
            pids: set[int] = set()
            while len(pids) < 2:
                assert select.select([started], [], [], LIMIT)[0], "the tasks never started"
                pids.update(int(line) for line in os.read(started, 4096).split())
            os.killpg(command.pid, signal.SIGINT)
            _, stderr = command.communicate(timeout=LIMIT)
        finally:
            os.close(started)
            if command.poll() is None:
                os.killpg(command.pid, signal.SIGKILL)
                command.wait()
    assert command.returncode == 130
    assert b"Traceback" not in stderr
    assert wait_gone(pids, timeout=10) == set()


def test_help_names_every_option() -> None:
    help_text = procpool("map", "--help").stdout.decode()
    for option in ["--unordered", "--json", "--timeout", "--retries", "--chunksize", "--progress"]:
        assert option in help_text
    assert "-j" in help_text
    assert "--workers N" in help_text
    top = procpool("--help").stdout.decode()
    assert all(name in top for name in ["map", "grep", "blur"])
    assert procpool().returncode == 2  # no command
