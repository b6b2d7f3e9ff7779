"""Fast worker starts: procpool's fork server is, where it can be, a fork of the program itself.

The standard library's fork server is a fresh interpreter: every worker it forks imports the
program's modules again (numpy, scipy, the user's own), which costs a pool hundreds of
milliseconds at every start and every respawn. Plain ``fork`` is fast but unsafe once the
parent has threads, and a pool keeps one.

So the first time this process starts a worker with procpool's ``forkserver`` method, and
provided it has a single Python thread then, it forks a *zygote*: a single-threaded copy of
itself, with every module already imported, that from then on forks each new worker on request.
Workers start in a millisecond or two, inherit the parent's modules as they were when the zygote
was made (as with ``fork``), and never inherit a lock held by a thread, because the zygote has
no other thread. Should the program already have other threads at that first start, procpool
falls back to a standard fork server of its own (a new interpreter) that preloads the
third-party modules the parent has imported, so each worker at least does not import them anew.

The zygote speaks the standard fork server's protocol towards the worker (a data pipe carrying
the pickled preparation data and process object; a status pipe carrying the worker's pid and
exit code), so a worker it forks is bootstrapped exactly as the standard library bootstraps
one. It exits when this process does (its request socket reaches end of file).
"""

from __future__ import annotations

import atexit
import io
import os
import selectors
import signal
import socket
import stat
import sys
import threading
import warnings
from multiprocessing import forkserver, popen_forkserver, reduction, spawn, util
from multiprocessing.context import set_spawning_popen
from typing import Any, Protocol

__all__ = ["Popen", "server_pids"]

# Descriptors one request may carry: the two pipes and what the process object duplicates.
_MAX_FDS = 250
# Preparation data the zygote's workers must not apply: they already hold the parent's
# ``__main__`` module, which a fork server would otherwise import again from its path.
_MAIN_KEYS = ("init_main_from_path", "init_main_from_name")


class _Server(Protocol):
    def connect_to_new_process(self, fds: list[int]) -> tuple[int, int]: ...


class Zygote:
    """The parent's handle on its zygote: a socket to send it requests on."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        with warnings.catch_warnings():
            # Python 3.12+ warns when a process with threads forks; only threads of native
            # libraries can be there now (checked by the caller), such as OpenBLAS's, which
            # register fork handlers of their own.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the zygote; its workers are what the tests see
            try:
                ours.close()
                _let_go_of_streams(keep=theirs.fileno())
                _serve(theirs)
            finally:
                os._exit(0)
        theirs.close()
        self.pid = pid
        self._sock = ours
        self._lock = threading.Lock()

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
        try:
            return os.waitpid(self.pid, os.WNOHANG)[0] == 0
        except ChildProcessError:
            return False


def _let_go_of_streams(keep: int) -> None:  # pragma: no cover - runs in the zygote
    """Close the pipes and sockets inherited from the parent, and stdin.

    The zygote lives as long as the program, and every worker it forks would inherit what it
    holds: a copy of a pipe's write end or a socket would keep the other end from ever seeing
    end of file (a pool's lifeline, a ``Pipe`` handed to a ``Process``, a subprocess's stdin).
    Regular files, terminals and devices stay open, as with ``fork``, so that log files
    configured before the first pool keep working in workers.
    """
    util._close_stdin()  # type: ignore[attr-defined]
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd <= 2 or fd == keep:
            continue
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            continue  # the directory listing's own descriptor, now closed
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            os.close(fd)


def _serve(sock: socket.socket) -> None:  # pragma: no cover - runs in the zygote
    """The zygote's loop: fork a worker per request, report its pid and later its exit code."""
    sig_r, sig_w = os.pipe()
    os.set_blocking(sig_r, False)
    os.set_blocking(sig_w, False)
    handlers: dict[signal.Signals, Any] = {
        signal.SIGCHLD: lambda *_: None,  # it only has to wake the selector (wakeup fd)
        signal.SIGINT: signal.SIG_IGN,  # Ctrl-C is the parent's to handle
    }
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
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
                _run_worker(child_r)
            os.close(child_r)
            for fd in inherited:
                os.close(fd)
            forkserver.write_signed(child_w, pid)
            status_fds[pid] = child_w


def _run_worker(child_r: int) -> None:  # pragma: no cover - runs in a worker
    """Bootstrap the process object the parent sends, then exit without the parent's exit
    handlers (the zygote's copy of them) but with multiprocessing's own, which flushes queues:
    Python 3.13 runs it at exit only, no longer at the end of the process's bootstrap."""
    code = 1
    atexit._clear()
    atexit.register(util._exit_function)  # type: ignore[attr-defined]
    try:
        code = spawn._main(child_r, os.dup(child_r))
    except Exception:
        sys.excepthook(*sys.exc_info())
    finally:
        atexit._run_exitfuncs()
        os._exit(code)


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

    def server(self) -> _Server:
        with self.lock:
            if self.zygote is not None and self.zygote.alive():
                return self.zygote
            if threading.active_count() == 1 and os.path.isdir("/proc/self/fd"):
                self.zygote = Zygote()
                return self.zygote
            if self.fallback is None:
                self.fallback = forkserver.ForkServer()
                self.fallback.set_forkserver_preload(["__main__", *_imported_packages()])
            server: _Server = self.fallback
            return server

    def reset(self) -> None:
        """In a forked child: the parent's fork server is not this process's."""
        self.lock = threading.Lock()
        self.zygote = None
        self.fallback = None


_state = _State()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_state.reset)


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


class Popen(popen_forkserver.Popen):
    """Starts a process through this process's fork server: the zygote, or the fallback."""

    def _launch(self, process_obj: Any) -> None:
        server = _state.server()
        prep_data = spawn.get_preparation_data(process_obj._name)
        if isinstance(server, Zygote):
            for key in _MAIN_KEYS:
                prep_data.pop(key, None)
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)
        self.sentinel, data_w = server.connect_to_new_process(self._fds)  # type: ignore[attr-defined]
        # A duplicate of the data pipe's write end stays open as the child's sign that its
        # parent lives, as in the standard library.
        parent_w = os.dup(data_w)
        close_fds = util.close_fds  # type: ignore[attr-defined]
        self.finalizer = util.Finalize(self, close_fds, (parent_w, self.sentinel))
        with open(data_w, "wb", closefd=True) as pipe:
            pipe.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)
