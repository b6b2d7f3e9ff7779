"""Fast worker starts: procpool's fork server is, where it can be, a fork of the program itself.

The standard library's fork server is a fresh interpreter: every worker it forks imports the
program's modules again (numpy, scipy, the user's own), which costs a pool hundreds of
milliseconds at every start and every respawn. Plain ``fork`` is fast but unsafe once the
parent has threads, and a pool keeps one.

So procpool's ``forkserver`` method starts a process in one of three ways:

- **While this process has a single Python thread** (a program starting its first pool, before
  the pool's scheduler thread exists), it forks the child itself: a fork of a single-threaded
  process cannot inherit a lock that another thread holds. The child closes the pipes and
  sockets it inherited but was not given (as the zygote below does, so that no end of file is
  held up by it) and is then bootstrapped from the same pickled process object as any
  forkserver child, so it behaves exactly like one that came from the fork server (with no
  preparation data to apply: it is a copy of the parent as it is now). The first such child
  (in a small program, the last of a pool's first workers: see ``burst``) forks the *zygote*,
  once it has closed those pipes and sockets (so that the zygote has none to close), so that
  this process does not wait for that fork; the zygote sets itself up only when its first
  request comes, leaving the CPUs to the workers starting meanwhile.
- **Once it has other threads**, the *zygote* forks the child: a single-threaded copy of this
  process as it was at its first start, with every module already imported, that forks each new
  process on request. It never has another thread, so its children never inherit a held lock,
  and they see the program's modules as they were when it was made (as with ``fork``).

Every such child freezes the objects it inherited (``gc.freeze``), so that its collector never
finalizes the parent's garbage nor copies the parent's heap by walking it.
- **Should the program already have other threads at its first start**, there is no safe
  moment to make a zygote: procpool falls back to a standard fork server of its own (a new
  interpreter) that preloads the third-party modules the parent has imported, so each worker at
  least does not import them anew.

The zygote speaks the standard fork server's protocol towards the child (a data pipe carrying
the pickled preparation data and process object; a status pipe carrying the child's pid and
exit code). It exits when this process does (its request socket reaches end of file).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import io
import os
import selectors
import signal
import socket
import stat
import struct
import sys
import threading
import warnings
from collections.abc import Iterator
from multiprocessing import (
    forkserver,
    popen_fork,
    popen_forkserver,
    process,
    reduction,
    spawn,
    util,
)
from multiprocessing.context import set_spawning_popen
from typing import IO, Any, Protocol

__all__ = ["ForkPopen", "Popen", "burst", "new_popen", "server_pids"]

# Descriptors one request may carry: the two pipes and what the process object duplicates.
_MAX_FDS = 250
# Preparation data that children forked from this process or its zygote must not apply: they
# already hold the parent's ``__main__`` module, which a fork server would import again.
_MAIN_KEYS = ("init_main_from_path", "init_main_from_name")
# How the zygote tells its pid to the parent, first thing on their socket.
_PID = struct.Struct("q")
# Resident memory above which a fork costs more than starting the next worker (see ``burst``).
_LARGE = 48 * 2**20
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class _Server(Protocol):
    def connect_to_new_process(self, fds: list[int]) -> tuple[int, int]: ...


class Zygote:
    """The parent's handle on its zygote: a socket to send it requests on.

    The zygote is forked by this process's first child forked directly (see ``ForkPopen``), so
    that the fork's cost is not this process's to wait for: it is that child's child, and sends
    its pid on the socket when it starts. It holds the other end of the socket for as long as
    it lives, so end of file there means it has gone.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._pid: int | None = None
        self._gone = False
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The zygote's pid (waiting for it to start if need be); None if it never did."""
        self._receive_pid(blocking=True)
        return self._pid

    def connect_to_new_process(self, fds: list[int]) -> tuple[int, int]:
        """Ask for a new process: returns (status_r, data_w) as the standard fork server does."""
        if len(fds) + 2 > _MAX_FDS:
            raise ValueError("too many fds")
        parent_r, child_w = os.pipe()
        child_r, parent_w = os.pipe()
        try:
            with self._lock:
                socket.send_fds(self._sock, [b"F"], [child_r, child_w, *fds])
        except BaseException:
            os.close(parent_r)
            os.close(parent_w)
            raise
        finally:
            os.close(child_r)
            os.close(child_w)
        return parent_r, parent_w

    def alive(self) -> bool:
        """False once the zygote has gone; True while it lives or is still being forked."""
        self._receive_pid(blocking=False)
        if self._gone:
            return False
        try:
            # The zygote sends nothing after its pid: anything to read is end of file.
            self._gone = not self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
        except OSError:
            self._gone = True
        return not self._gone

    def _receive_pid(self, blocking: bool) -> None:
        with self._lock:
            if self._pid is not None or self._gone:
                return
            try:
                data = self._sock.recv(
                    _PID.size, socket.MSG_WAITALL if blocking else socket.MSG_DONTWAIT
                )
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if len(data) == _PID.size:
                self._pid = _PID.unpack(data)[0]
            else:
                self._gone = True  # it ended before it said who it was

    def forget(self) -> None:
        """In a forked child: close this process's copy of the request socket (the zygote is
        the parent's, and its end of file must not wait for this child)."""
        self._sock.close()


def _fork_zygote(sock: socket.socket, inherited: set[int]) -> None:  # pragma: no cover - a child
    """In the first child forked directly, once it has let go of the streams it was not given:
    fork the zygote, a copy of the parent as it was at that fork, which serves the parent's
    requests on ``sock``. ``inherited``: the child's own descriptors, which the zygote closes.

    The zygote then waits for its first request before it sets itself up: the program is
    starting its first workers now, and on a machine with few cores the zygote's work would
    take from theirs. It ignores Ctrl-C from the start (the parent handles it), and says its
    pid at once, so that the parent knows it lives. Should this fork fail, there is no zygote:
    the parent sees its socket's end of file and starts processes without it.
    """
    try:
        pid = os.fork()
    except OSError:
        pid = -1
    if pid == 0:
        try:
            _freeze_inherited_objects()
            interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
            for fd in inherited:
                os.close(fd)
            util._close_stdin()  # type: ignore[attr-defined]
            sock.sendall(_PID.pack(os.getpid()))
            if sock.recv(1, socket.MSG_PEEK):  # a request (else the parent has gone)
                _serve(sock, interrupt)
        finally:
            os._exit(0)
    sock.close()


def _freeze_inherited_objects() -> None:  # pragma: no cover - runs in a forked child
    """Keep this child's garbage collector away from the objects it inherited from the parent.

    They are the parent's: should some be garbage there (a cycle holding a socket the parent
    never closed, say), collecting them here would run their finalizers, closing descriptor
    numbers that this child has closed and reused for its own. And a collection that walks
    them writes to every page they sit on, copying the parent's whole heap into this process.
    """
    gc.freeze()


def _fork() -> int:
    """``os.fork()`` of this process, which has a single Python thread (the callers check)."""
    with warnings.catch_warnings():
        # Python 3.12+ warns when a process with threads forks; only threads of native
        # libraries can be there now, such as OpenBLAS's, which register fork handlers of
        # their own.
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def _let_go_of_streams(keep: set[int]) -> None:  # pragma: no cover - runs in a forked child
    """Close the pipes and sockets inherited from the parent but for ``keep``.

    The zygote lives as long as the program, and every worker it forks would inherit what it
    holds; a child forked from the program itself inherits the program's: a copy of a pipe's
    write end or a socket would keep the other end from ever seeing end of file (a pool's
    lifeline, a ``Pipe`` handed to another ``Process``, a subprocess's stdin). Regular files,
    terminals and devices stay open, as with ``fork``, so that log files configured before the
    first pool keep working in workers.
    """
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd <= 2 or fd in keep:
            continue
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            continue  # the directory listing's own descriptor, now closed
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            os.close(fd)


def _serve(sock: socket.socket, interrupt: Any) -> None:  # pragma: no cover - in the zygote
    """The zygote's loop: fork a worker per request, report its pid and later its exit code.

    ``interrupt``: the parent's SIGINT handler, which the children get back (the zygote
    ignores Ctrl-C: the parent handles it)."""
    sig_r, sig_w = os.pipe()
    os.set_blocking(sig_r, False)
    os.set_blocking(sig_w, False)
    # SIGCHLD only has to wake the selector (through the wake-up descriptor).
    previous = {
        signal.SIGCHLD: signal.signal(signal.SIGCHLD, lambda *_: None),
        signal.SIGINT: interrupt,
    }
    signal.set_wakeup_fd(sig_w)
    status_fds: dict[int, int] = {}  # worker pid -> its status pipe
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        selector.register(sig_r, selectors.EVENT_READ)
        while True:
            ready = {key.fileobj for key, _ in selector.select()}
            if sig_r in ready:
                _reap(sig_r, status_fds)
            if sock not in ready:
                continue
            message, fds, _, _ = socket.recv_fds(sock, 16, _MAX_FDS)
            if not message:
                return  # the parent has gone
            child_r, child_w, *inherited = fds
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                for fd in (sig_r, sig_w, child_w, *status_fds.values()):
                    os.close(fd)
                sock.close()
                # What a process object's duplicated descriptors resolve to (DupFd.detach).
                forkserver._forkserver._inherited_fds = inherited  # type: ignore[attr-defined]
                _run_child(os.fdopen(child_r, "rb"), os.dup(child_r))
            os.close(child_r)
            for fd in inherited:
                os.close(fd)
            forkserver.write_signed(child_w, pid)
            status_fds[pid] = child_w


def _run_child(data: IO[bytes], parent_sentinel: int) -> None:  # pragma: no cover - a child
    """Bootstrap the process object the parent pickled, then exit without the parent's exit
    handlers (the copy a fork inherited) but with multiprocessing's own, which flushes queues:
    Python 3.13 runs it at exit only, no longer at the end of the process's bootstrap."""
    code = 1
    _freeze_inherited_objects()
    atexit._clear()
    atexit.register(util._exit_function)  # type: ignore[attr-defined]
    try:
        code = _bootstrap(data, parent_sentinel)
    except Exception:
        sys.excepthook(*sys.exc_info())
    finally:
        atexit._run_exitfuncs()
        os._exit(code)


def _bootstrap(data: IO[bytes], parent_sentinel: int) -> int:  # pragma: no cover - a child
    """What the standard library's ``spawn._main`` does, reading from any binary stream: apply
    the preparation data, unpickle the process object, run it."""
    with data:
        process.current_process()._inheriting = True  # type: ignore[attr-defined]
        try:
            spawn.prepare(reduction.pickle.load(data))  # type: ignore[attr-defined]
            child = reduction.pickle.load(data)  # type: ignore[attr-defined]
        finally:
            del process.current_process()._inheriting  # type: ignore[attr-defined]
    code: int = child._bootstrap(parent_sentinel)
    return code


def _reap(sig_r: int, status_fds: dict[int, int]) -> None:  # pragma: no cover - in the zygote
    try:
        while os.read(sig_r, 4096):
            pass
    except BlockingIOError:
        pass
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = status_fds.pop(pid, None)
        if fd is not None:
            try:
                forkserver.write_signed(fd, os.waitstatus_to_exitcode(status))
            except OSError:
                pass  # the parent stopped listening
            os.close(fd)


class _State:
    """This process's fork server (made on first use; forgotten in a forked child)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.zygote: Zygote | None = None
        self.fallback: Any = None  # a private multiprocessing.forkserver.ForkServer
        # Children still to be forked in a burst (see ``burst``): only the last forks the zygote.
        self.burst = 0

    @staticmethod
    def may_fork_here() -> bool:
        """Whether a child may be forked from this process now: it has a single Python thread
        (and says which descriptors it holds, to close in the child)."""
        return threading.active_count() == 1 and os.path.isdir("/proc/self/fd")

    def server(self) -> _Server:
        """Where to send a request for a new process: the zygote if it lives, else the
        fallback fork server (made on first use)."""
        with self.lock:
            if self.zygote is not None and self.zygote.alive():
                return self.zygote
            if self.fallback is None:
                self.fallback = forkserver.ForkServer()
                self.fallback.set_forkserver_preload(["__main__", *_imported_packages()])
            server: _Server = self.fallback
            return server

    def fork(self) -> tuple[int, socket.socket | None]:
        """``os.fork()`` for a child started directly; if this process has no live zygote, the
        child gets the zygote's end of a new socket, to fork the zygote from (in a burst, the
        last child does)."""
        with self.lock:
            if self.zygote is not None and self.zygote.alive():
                return _fork(), None
            if self.burst > 1:  # a later child of the burst forks the zygote
                self.burst -= 1
                return _fork(), None
            ours, theirs = socket.socketpair()
            try:
                pid = _fork()
            except BaseException:
                ours.close()
                theirs.close()
                raise
            if pid == 0:  # pragma: no cover - the child
                ours.close()
                return pid, theirs
            theirs.close()
            self.zygote = Zygote(ours)
            return pid, None

    def reset(self) -> None:
        """In a forked child: the parent's fork server is not this process's."""
        if self.zygote is not None:
            self.zygote.forget()
        self.lock = threading.Lock()
        self.zygote = None
        self.fallback = None
        self.burst = 0


_state = _State()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_state.reset)


@contextlib.contextmanager
def burst(count: int) -> Iterator[None]:
    """The next ``count`` processes started directly from this process are one burst (a pool's
    first workers): if a zygote is to be made, which of them forks it depends on this
    process's size.

    A small program (a fork of it takes about a millisecond): the last child, so that the
    first, which takes the pool's first task, does not wait for that fork. A large one
    (``import numpy, scipy`` brings it to 75 MiB, and a fork to several milliseconds): the
    first child, whose fork of the zygote then runs while this process forks the others (as
    slow), where the last child's would come after them, and every worker is ready sooner.
    Measured on 2 cores, a pool of two, one task, close: 1.1 ms saved by the last child
    without scipy, 1.7 ms lost with it."""
    with _state.lock:
        _state.burst = count if _resident_bytes() < _LARGE else 0
    try:
        yield
    finally:
        with _state.lock:
            _state.burst = 0


def _resident_bytes() -> int:
    """This process's resident memory (0 where /proc does not say)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def server_pids() -> set[int]:
    """The processes of this process's fork servers (long-lived helpers, like the standard
    library's fork server and resource tracker)."""
    pids = {
        getattr(_state.zygote, "pid", None),
        getattr(_state.fallback, "_forkserver_pid", None),
    }
    return {pid for pid in pids if pid is not None}


def _imported_packages() -> list[str]:
    """Top-level third-party modules this process has imported, to preload in a fork server."""
    stdlib = sys.stdlib_module_names
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if "." not in name
        and not name.startswith("_")
        and name not in stdlib
        and getattr(module, "__file__", None)
    )


def new_popen(process_obj: Any) -> popen_forkserver.Popen:
    """Start ``process_obj`` with procpool's ``forkserver`` method: forked from this process
    while it has a single thread, else by its fork server (see the module's docstring)."""
    if _state.may_fork_here():
        return ForkPopen(process_obj)
    return Popen(process_obj)


def _preparation(process_obj: Any, zygote: bool) -> dict[str, Any]:
    """What a fork server's child must set up before it unpickles the process object (working
    directory, ``sys.path``...); the zygote's children already hold ``__main__``."""
    prep_data: dict[str, Any] = spawn.get_preparation_data(process_obj._name)
    if zygote:
        for key in _MAIN_KEYS:
            prep_data.pop(key, None)
    return prep_data


def _pickled(popen: popen_forkserver.Popen, process_obj: Any, prep_data: Any) -> io.BytesIO:
    """The preparation data and the process object, pickled as for a fork server: descriptors
    the object holds are recorded in ``popen._fds``."""
    buf = io.BytesIO()
    set_spawning_popen(popen)
    try:
        reduction.dump(prep_data, buf)
        reduction.dump(process_obj, buf)
    finally:
        set_spawning_popen(None)
    buf.seek(0)
    return buf


class Popen(popen_forkserver.Popen):
    """Starts a process through this process's fork server: the zygote, or the fallback."""

    def _launch(self, process_obj: Any) -> None:
        server = _state.server()
        prep_data = _preparation(process_obj, zygote=isinstance(server, Zygote))
        buf = _pickled(self, process_obj, prep_data)
        self.sentinel, data_w = server.connect_to_new_process(self._fds)  # type: ignore[attr-defined]
        # A duplicate of the data pipe's write end stays open as the child's sign that its
        # parent lives, as in the standard library.
        parent_w = os.dup(data_w)
        close_fds = util.close_fds  # type: ignore[attr-defined]
        self.finalizer = util.Finalize(self, close_fds, (parent_w, self.sentinel))
        with open(data_w, "wb", closefd=True) as pipe:
            pipe.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class ForkPopen(popen_forkserver.Popen):
    """Forks the process from this one, which has a single thread; if there is no zygote yet
    for the starts to come, the child forks it.

    The child gets what a fork server's child gets: fresh copies of the descriptors the
    process object holds and no other pipe or socket, and the process object unpickled from
    the same bytes (so an object that reconnects in ``__setstate__`` does so here too; running
    the inherited copy instead would hand it the descriptors just closed). Being this
    process's own child, it is reaped with ``waitpid``, as with ``fork``, and its sentinel is
    a pipe that its exit closes.
    """

    poll = popen_fork.Popen.poll
    _fds: list[int]  # set by the standard library's constructor

    def _launch(self, process_obj: Any) -> None:
        # A fork of this process as it is now has nothing to prepare.
        buf = _pickled(self, process_obj, {})
        parent_r, child_w = os.pipe()  # end of file: the child has exited
        child_r, parent_w = os.pipe()  # end of file, in the child: this process has exited
        try:
            pid, zygote_end = _state.fork()
        except BaseException:
            for fd in (parent_r, child_w, child_r, parent_w):
                os.close(fd)
            raise
        if pid == 0:  # pragma: no cover - the child
            try:
                _freeze_inherited_objects()
                # This process's signal wake-up descriptor (asyncio's socket, say) is not the
                # child's, and is about to be closed and its number reused.
                signal.set_wakeup_fd(-1)
                os.close(parent_r)
                os.close(parent_w)
                inherited = [os.dup(fd) for fd in self._fds]
                own = {child_r, child_w, *inherited}
                if zygote_end is None:
                    _let_go_of_streams(keep=own)
                else:
                    _let_go_of_streams(keep={*own, zygote_end.fileno()})
                    _fork_zygote(zygote_end, own)
                forkserver._forkserver._inherited_fds = inherited  # type: ignore[attr-defined]
                _run_child(buf, child_r)
            finally:
                os._exit(1)  # never back into the parent's code
        os.close(child_r)
        os.close(child_w)
        self.pid = pid
        self.sentinel = parent_r
        close_fds = util.close_fds  # type: ignore[attr-defined]
        self.finalizer = util.Finalize(self, close_fds, (parent_w, parent_r))
