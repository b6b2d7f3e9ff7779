"""``progress=``: the bar under a pseudo-terminal, silence without one, the callable's calls."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import procpool
from _cli import LIMIT, env
from _helpers import square

SCRIPT = textwrap.dedent(
    """
    import sys
    from procpool import Pool

    if __name__ == "__main__":
        option = {"True": True, "force": "force"}[sys.argv[1]]
        with Pool(2) as pool:
            result = pool.map(abs, range(-60, 0), chunksize=4, progress=option)
            assert result == list(range(60, 0, -1))
            assert sum(pool.imap_unordered(abs, iter(range(25)), progress=option)) == 300
        print("done")
    """
)


def run_with_terminal_stderr(args: Sequence[str], cwd: Path | None = None) -> tuple[bytes, bytes]:
    """Run a command whose stderr is a pseudo-terminal; return (stdout, what the terminal got)."""
    master, slave = pty.openpty()
    # A terminal of 100 columns (a new pseudo-terminal has none, and a bar needs some).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        process = subprocess.Popen(
            args, cwd=cwd, stdout=subprocess.PIPE, stderr=slave, env=env(), close_fds=True
        )
    finally:
        os.close(slave)
    terminal = b""
    try:
        while True:
            assert select.select([master], [], [], LIMIT)[0], "the command hung"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not chunk:
                break
            terminal += chunk
        stdout, _ = process.communicate(timeout=LIMIT)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, terminal
    return stdout, terminal


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "bar.py"
    path.write_text(SCRIPT)
    return path


def test_bar_on_a_terminal(script: Path) -> None:
    stdout, terminal = run_with_terminal_stderr([sys.executable, str(script), "True"])
    assert stdout == b"done\n"
    assert b"60/60" in terminal  # map: the total is known
    assert b"100%" in terminal
    assert b"25item" in terminal or b"25 item" in terminal  # imap over a generator: a count
    assert b"item/s" in terminal  # the rate


def test_no_bar_without_a_terminal_unless_forced(script: Path) -> None:
    quiet = subprocess.run(
        [sys.executable, str(script), "True"], capture_output=True, env=env(), timeout=LIMIT
    )
    assert (quiet.stdout, quiet.stderr, quiet.returncode) == (b"done\n", b"", 0)
    forced = subprocess.run(
        [sys.executable, str(script), "force"], capture_output=True, env=env(), timeout=LIMIT
    )
    assert forced.returncode == 0
    assert b"60/60" in forced.stderr


def test_command_bars_on_a_terminal(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "procpool", "map", "--json", "--progress", "math:sqrt"]
    command += ["4", "9"]
    stdout, terminal = run_with_terminal_stderr(command)
    assert stdout.split() == [b"2.0", b"3.0"]
    assert b"2/2" in terminal


def test_callable_gets_done_and_total() -> None:
    calls: list[tuple[int, int | None]] = []

    def record(done: int, total: int | None) -> None:
        calls.append((done, total))

    with procpool.Pool(2) as pool:
        assert pool.map(square, range(100), chunksize=7, progress=record) == [
            x * x for x in range(100)
        ]
        assert calls[-1] == (100, 100)
        assert [done for done, _ in calls] == sorted({done for done, _ in calls})
        calls.clear()
        assert list(pool.imap(square, iter(range(30)), chunksize=4, progress=record)) == [
            x * x for x in range(30)
        ]
        assert calls[-1] == (30, None)
        calls.clear()
        assert pool.starmap_async(pow, [(2, 3)] * 5, progress=record).get() == [8] * 5
        assert calls[-1] == (5, 5)
        calls.clear()
        assert pool.map(square, [], progress=record) == []
        assert calls == [(0, 0)]


def test_callable_that_raises_is_raised_by_get() -> None:
    def broken(done: int, total: int | None) -> None:
        raise RuntimeError("the progress callable broke")

    with procpool.Pool(1) as pool:
        with pytest.raises(RuntimeError, match="progress callable broke"):
            pool.map(square, range(10), progress=broken)
        with pytest.raises(RuntimeError, match="progress callable broke"):
            list(pool.imap_unordered(square, range(10), progress=broken))


@pytest.mark.parametrize("bad", ["yes", 3])
def test_invalid_option(bad: Any) -> None:
    with procpool.Pool(1) as pool:
        with pytest.raises(ValueError, match="progress must be"):
            pool.map(square, range(3), progress=bad)
        with pytest.raises(TypeError, match="progress"):
            pool.apply(square, (3,), progress=True)  # type: ignore[call-arg]


def test_an_abandoned_imap_ends_its_reports_with_the_pool() -> None:
    calls: list[tuple[int, int | None]] = []
    pool = procpool.Pool(1)
    iterator = pool.imap(square, range(1000), progress=lambda *call: calls.append(call))
    assert next(iterator) == 0  # then the consumer stops reading
    reporter = iterator._progress
    assert reporter is not None
    pool.close()  # the rest of the input still runs...
    pool.join()
    reporter.join()  # ...and the reports end with it
    assert calls[-1] == (1000, 1000)
