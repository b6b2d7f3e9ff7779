"""Shared helpers for procpool's tests (stdlib only).

Worker processes import this module by name to find the task functions below, so it imports
nothing but the standard library: a spawn or forkserver worker loads it in milliseconds.

* Task functions and objects that misbehave on purpose (crash, block, refuse to pickle).
* :class:`Rendezvous`: a task tells the test which worker runs it, then waits for the test to
  let it go, so tests synchronise with running tasks without sleeping.
* Process accounting from ``/proc`` (no psutil): the children this test process has.
"""

from __future__ import annotations

import contextlib
import faulthandler
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import resource
import select
import signal
import socket
import threading
import time
import uuid
from typing import Any

from procpool._zygote import server_pids

__all__ = [
    "FailsToLoad",
    "Rendezvous",
    "SetstateRaises",
    "TwoArgError",
    "Unpicklable",
    "block",
    "checkin",
    "child_processes",
    "crash",
    "exit_initializer",
    "fail_initializer",
    "helper_pids",
    "identity",
    "is_gone",
    "raise_fails_to_load",
    "raise_unpicklable",
    "return_fails_to_load",
    "return_unpicklable",
    "run_item",
    "square",
    "stat",
    "wait_gone",
]

# -- plain tasks ----------------------------------------------------------------------------


def square(x: int) -> int:
    return x * x


def identity(x: Any) -> Any:
    return x


def run_item(item: Any) -> Any:
    """imap's function in the fault tests: ``n`` gives ``n * n``, ``(func, args)`` calls func."""
    if isinstance(item, int):
        return item * item
    func, args = item
    return func(*args)


# -- rendezvous between a test and the task a worker runs ---------------------------------------


class Rendezvous:
    """A listening Unix socket (abstract namespace: no file to clean up) that tasks report to.

    A task calls :func:`checkin` (or :func:`block`, :func:`crash`), which connects and sends the
    worker's pid; the test's :meth:`accept` returns that pid, so the test knows the task is running
    and in which process. A task that then waits on its connection returns when the test calls
    :meth:`release_all` or :meth:`close` (EOF), so a failing test never leaves a task blocked.
    Every wait is bounded by ``timeout``: a task that never checks in fails the test, not hangs it.
    """

    def __init__(self, timeout: float = 30.0) -> None:
        self.address = f"\0procpool-tests-{uuid.uuid4().hex}"
        self._timeout = timeout
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.address)
        self._listener.listen(64)
        self._listener.settimeout(timeout)
        self._connections: list[socket.socket] = []

    def accept(self) -> int:
        """Wait for the next task to check in; return its worker's pid."""
        conn, _ = self._listener.accept()
        self._connections.append(conn)
        conn.settimeout(self._timeout)
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(64)
            if not chunk:
                raise ConnectionError(f"a task hung up before it sent its pid (got {data!r})")
            data += chunk
        return int(data)

    def release_all(self) -> None:
        """Let every task that checked in so far return."""
        for conn in self._connections:
            with contextlib.suppress(OSError):
                conn.sendall(b"go")

    def close(self) -> None:
        for conn in self._connections:
            conn.close()
        self._connections.clear()
        self._listener.close()

    def __enter__(self) -> Rendezvous:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def checkin(address: str) -> socket.socket:
    """(In a worker) Tell the test's rendezvous this worker's pid; return the open connection."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(address)
        # sendall returns once the bytes are in the test's receive buffer: they arrive even if
        # this process dies right after.
        sock.sendall(f"{os.getpid()}\n".encode())
    except BaseException:
        sock.close()
        raise
    return sock


def block(address: str, value: Any = None) -> Any:
    """(In a worker) Check in, then wait until the test releases the task; return ``value``."""
    with checkin(address) as sock:
        sock.settimeout(None)
        sock.recv(1)
    return value


def crash(address: str, how: str) -> None:
    """(In a worker) Check in, then die: ``sigsegv``, ``exit3``, or ``sigkill`` (wait for the
    test to SIGKILL this process)."""
    sock = checkin(address)  # kept open until the process dies
    if how == "sigsegv":
        # No core file and no faulthandler dump (a forked worker inherits pytest's): the crash
        # is the point, not its post-mortem.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        faulthandler.disable()
        os.kill(os.getpid(), signal.SIGSEGV)
    elif how == "exit3":
        os._exit(3)
    elif how == "sigkill":
        sock.settimeout(None)
        sock.recv(1)  # the test kills this process while it waits here
    raise AssertionError(f"crash({how!r}) is still alive")


# -- initializers -------------------------------------------------------------------------------


def fail_initializer(message: str) -> None:
    raise ValueError(message)


def exit_initializer(code: int) -> None:
    os._exit(code)


# -- objects and tasks that break pickling at each step ------------------------------------------


class Unpicklable:
    """Cannot be pickled at all (like a lock or an open file)."""

    def __reduce__(self) -> Any:
        raise TypeError("cannot pickle 'Unpicklable' object")


def _refuse_to_load(what: str) -> None:
    raise ValueError(f"refusing to unpickle the {what}")


class FailsToLoad:
    """Pickles fine; unpickling calls a function that raises."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __reduce__(self) -> Any:
        return (_refuse_to_load, (self.what,))


class SetstateRaises:
    """Pickles fine; its ``__setstate__`` raises when it is unpickled."""

    def __init__(self) -> None:
        self.payload = 1  # a non-empty state, so that unpickling calls __setstate__

    def __setstate__(self, state: Any) -> None:
        raise RuntimeError("SetstateRaises.__setstate__ refused")


class TwoArgError(Exception):
    """Pickles fine; cannot be unpickled (its ``args`` do not fit its ``__init__``), the classic
    custom exception that hangs ``multiprocessing.Pool``."""

    def __init__(self, first: str, second: str) -> None:
        super().__init__(f"{first}/{second}")


def return_unpicklable() -> Any:
    return threading.Lock()


def raise_unpicklable() -> None:
    raise ValueError("an exception holding a lock", threading.Lock())


def return_fails_to_load() -> Any:
    return FailsToLoad("result")


def raise_fails_to_load() -> None:
    raise TwoArgError("first", "second")


# -- process accounting ------------------------------------------------------------------------


def stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may itself hold spaces and parentheses.
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1])


def helper_pids() -> set[int]:
    """The long-lived helpers: the standard library's fork server and resource tracker, and
    procpool's fork servers (its zygote, or its own fork server)."""
    pids = {
        getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None),
        getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None),
    }
    return {pid for pid in pids if pid is not None} | server_pids()


def child_processes() -> set[int]:
    """Processes this process started, other than the stdlib's helpers.

    The fork server's children count too: forkserver workers are its children, not ours. A zombie
    counts (nobody reaped it: something forgot a process).
    """
    helpers = helper_pids()
    parents = {os.getpid(), *helpers}
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        info = stat(int(entry))
        if info is not None and info[1] in parents and int(entry) not in helpers:
            found.add(int(entry))
    return found


def is_gone(pid: int) -> bool:
    """True if the process has exited (a zombie has exited; reaping it is its parent's job)."""
    info = stat(pid)
    return info is None or info[0] in ("Z", "X")


def wait_gone(pids: set[int] | list[int], timeout: float) -> set[int]:
    """Wait until every process in ``pids`` has exited; return those still alive at ``timeout``.

    Waits on a pidfd per process (readable once it exits, even when it is not our child), so it
    reaps nothing: the pool keeps reaping its own workers.
    """
    deadline = time.monotonic() + timeout
    alive = set()
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)
        if not is_gone(pid):
            alive.add(pid)
    return alive
