"""Task functions for ``test_fault_tolerance.py`` (stdlib only, like ``_helpers``).

Workers import this module by name to find the functions, so it imports nothing heavier than
the standard library and ``_helpers``: a spawn or forkserver worker loads it in milliseconds, and
a worker's resident memory stays close to a bare interpreter's (the memory-cap tests rely on it).

A task's state must survive its worker (the worker is killed and replaced between attempts), and
module globals differ per process, so tasks that behave differently on a later attempt keep their
record in files whose paths the test passes as arguments.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from _helpers import block

# What ``hoard`` keeps alive in the worker, so that its resident memory stays grown.
_hoard: list[bytes] = []


def getpid() -> int:
    return os.getpid()


def kill_self() -> None:
    """Die of SIGKILL, as the out-of-memory killer kills."""
    os.kill(os.getpid(), signal.SIGKILL)


def record_attempt(directory: str) -> int:
    """Record an attempt at a task in ``directory`` (a file ``<attempt>-<pid>``); return the
    attempt's number, from 1. A task's attempts run one after another, never at once."""
    attempt = len(os.listdir(directory)) + 1
    with open(os.path.join(directory, f"{attempt}-{os.getpid()}"), "x"):
        pass
    return attempt


def attempt_pids(directory: str) -> list[int]:
    """(In the test) The pid of the worker that made each attempt, in order."""
    names = sorted(os.listdir(directory), key=lambda name: int(name.split("-")[0]))
    return [int(name.split("-")[1]) for name in names]


def _first_time(marker: str) -> bool:
    """True (and create ``marker``, holding this pid) if ``marker`` does not exist yet."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    try:
        os.write(fd, str(os.getpid()).encode())
    finally:
        os.close(fd)
    return True


def die_first_time(marker: str, value: Any = None) -> tuple[int, Any]:
    """SIGKILL this worker on the first attempt; later attempts return (pid, value)."""
    if _first_time(marker):
        kill_self()
    return os.getpid(), value


def die_always(directory: str) -> None:
    record_attempt(directory)
    kill_self()


def raise_until(directory: str, failures: int) -> int:
    """Raise ConnectionError on the first ``failures`` attempts; then return the attempt number."""
    attempt = record_attempt(directory)
    if attempt <= failures:
        raise ConnectionError("connection refused", attempt)
    return attempt


def raise_value_error(directory: str) -> None:
    attempt = record_attempt(directory)
    raise ValueError("not worth a retry", attempt)


def block_first_time(marker: str, address: str) -> int:
    """Check in and block on the first attempt (until the pool kills it); then return the pid."""
    if _first_time(marker):
        block(address)
    return os.getpid()


def touch(marker: str) -> int:
    """Create ``marker``: the test can tell that the task ran."""
    with open(marker, "x"):
        pass
    return os.getpid()


def touch_then_block(directory: str, name: str, address: str) -> str:
    touch(os.path.join(directory, name))
    return block(address, name)  # type: ignore[no-any-return]


def hoard(mib: int) -> int:
    """Allocate ``mib`` MiB, touch every page and keep it: the worker's resident memory grows."""
    _hoard.append(b"\x01" * (mib * 2**20))
    return os.getpid()


def outcome(index: int, kind: str, marker: str = "") -> int:
    """One item of a return_exceptions map: ``ok`` returns index², ``value`` and ``key`` raise,
    ``die`` writes this pid to ``marker`` and kills the worker."""
    if kind == "value":
        raise ValueError("bad item", index)
    if kind == "key":
        raise KeyError(index)
    if kind == "die":
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        kill_self()
    return index * index


def outcome_item(item: tuple[int, str, str]) -> int:
    return outcome(*item)


class _KillsWhenPickled:
    """A result whose pickling kills the worker, after the task has called all its items."""

    def __reduce__(self) -> tuple[Any, ...]:
        kill_self()
        raise AssertionError("unreachable")


def dies_when_returned(index: int) -> Any:
    return _KillsWhenPickled() if index == 3 else index


def exit_every(item: int) -> int:
    """Exit the worker on every item whose remainder by 50 is 13; else return its square."""
    if item % 50 == 13:
        os._exit(3)
    return item * item
