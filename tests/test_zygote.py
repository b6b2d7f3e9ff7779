"""procpool's default start method: children forked from the program while it has a single
thread, the zygote for the starts that come once it has more, the fallback fork server when it
had threads from the start (see ``procpool._zygote``).

What a process does first decides which of them it uses, so each test runs a small program of
its own in a fresh interpreter, which prints what it saw as one line of JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from _helpers import wait_gone

# A program that takes longer has hung.
LIMIT = 60

# Shared by the programs: reading a process's parent, and what a task reports of its process.
_PRELUDE = """
import json, os, signal, sys, threading
import multiprocessing.connection
import procpool
from procpool import _zygote


def ppid(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])


def children_of(parent):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if ppid(int(entry)) == parent:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def whoami(_=None):
    return os.getpid(), os.getppid()


def popen_types(pool):
    return sorted({type(w._popen).__name__ for w in pool._pool})


def report(**values):
    print(json.dumps(values), flush=True)


def make_zygote():
    # A pool started and closed while the program has a single thread: its worker forks it.
    with procpool.Pool(1) as pool:
        pool.apply(abs, (-1,))
    return _zygote._state.zygote
"""


def run_program(tmp_path: Path, body: str) -> dict[str, Any]:
    """Run ``body`` (after the prelude) as a main script; what it reported."""
    script = tmp_path / "program.py"
    script.write_text(_PRELUDE + textwrap.dedent(body))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=LIMIT, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_first_workers_are_forked_from_the_program_respawns_from_the_zygote(
    tmp_path: Path,
) -> None:
    seen = run_program(
        tmp_path,
        """
        STATE = "set before the pool"

        def state(_):
            return STATE

        if __name__ == "__main__":
            with procpool.Pool(1) as pool:
                first = pool._pool[0]
                first_type = popen_types(pool)
                first_parent = ppid(first.pid)
                zygote = _zygote._state.zygote
                zygote_pid = zygote.pid
                os.kill(first.pid, signal.SIGKILL)
                multiprocessing.connection.wait([first.sentinel])
                # A task sent before the pool saw the death runs again on the replacement.
                pid, parent = pool.apply(whoami, (0,), retries=2)
                report(
                    first_type=first_type,
                    first_is_child=first_parent == os.getpid(),
                    zygote_is_child=ppid(zygote_pid) == os.getpid(),
                    zygote_alive=zygote.alive(),
                    replacement_type=popen_types(pool),
                    replacement_parent_is_zygote=parent == zygote_pid,
                    replacement_is_new=pid != first.pid,
                    state=pool.apply(state, (0,)),
                )
        """,
    )
    assert seen == {
        "first_type": ["ForkPopen"],
        "first_is_child": True,
        # Forked by the first child, so that the program does not wait for that fork.
        "zygote_is_child": False,
        "zygote_alive": True,
        "replacement_type": ["Popen"],
        "replacement_parent_is_zygote": True,
        "replacement_is_new": True,
        "state": "set before the pool",
    }


def test_no_process_left_after_close(tmp_path: Path) -> None:
    """Two pools, the second started while the first runs (from the zygote): once both are
    joined, neither the program nor the zygote has a child left, and the zygote still serves."""
    seen = run_program(
        tmp_path,
        """
        if __name__ == "__main__":
            first = procpool.Pool(2)
            second = procpool.Pool(2)
            types = [popen_types(first), popen_types(second)]
            squares = [first.map(abs, [-1, -2]), second.map(abs, [-3, -4])]
            workers = [w.pid for pool in (first, second) for w in pool._pool]
            for pool in (first, second):
                pool.close()
                pool.join()
            zygote = _zygote._state.zygote
            report(
                types=types,
                squares=squares,
                workers=workers,
                our_children=children_of(os.getpid()),
                zygote_children=children_of(zygote.pid),
                zygote_alive=zygote.alive(),
            )
        """,
    )
    assert seen["types"] == [["ForkPopen"], ["Popen"]]
    assert seen["squares"] == [[1, 2], [3, 4]]
    assert len(set(seen["workers"])) == 4
    assert seen["our_children"] == []
    assert seen["zygote_children"] == []
    assert seen["zygote_alive"] is True


def test_a_program_with_threads_at_its_first_start_uses_the_fallback_server(
    tmp_path: Path,
) -> None:
    seen = run_program(
        tmp_path,
        """
        if __name__ == "__main__":
            release = threading.Event()
            thread = threading.Thread(target=release.wait)
            thread.start()
            try:
                with procpool.Pool(2) as pool:
                    report(
                        types=popen_types(pool),
                        zygote=_zygote._state.zygote is not None,
                        fallback=_zygote._state.fallback is not None,
                        parents_are_us=[ppid(w.pid) == os.getpid() for w in pool._pool],
                        squares=pool.map(abs, [-5, -6]),
                    )
            finally:
                release.set()
                thread.join()
        """,
    )
    assert seen == {
        "types": ["Popen"],
        "zygote": False,
        "fallback": True,
        "parents_are_us": [False, False],
        "squares": [5, 6],
    }


def test_no_child_holds_a_pipe_of_the_program(tmp_path: Path) -> None:
    """A pipe the program made before its pools reaches end of file once the program closes
    its write end: neither the children it forked, nor the zygote, nor the zygote's children
    kept a copy."""
    seen = run_program(
        tmp_path,
        """
        import select

        if __name__ == "__main__":
            r, w = os.pipe()
            with procpool.Pool(2) as first, procpool.Pool(1) as second:
                assert first.map(abs, [-1, -2]) == [1, 2] and second.apply(abs, (-3,)) == 3
                os.close(w)
                readable, _, _ = select.select([r], [], [], 30)
                report(types=[popen_types(first), popen_types(second)],
                       end_of_file=bool(readable) and os.read(r, 1) == b"")
        """,
    )
    assert seen == {"types": [["ForkPopen"], ["Popen"]], "end_of_file": True}


def test_a_process_started_first_gets_its_pipe_queue_and_lambda(tmp_path: Path) -> None:
    seen = run_program(
        tmp_path,
        """
        if __name__ == "__main__":
            reader, writer = procpool.Pipe(duplex=False)
            queue = procpool.Queue()
            offset = 10
            process = procpool.Process(
                target=lambda conn, q: (conn.send("piped"), q.put(offset), offset + 1)[2],
                args=(writer, queue),
            )
            process.start()
            writer.close()
            report(
                type=type(process._popen).__name__,
                piped=reader.recv(),
                queued=queue.get(timeout=30),
                result=process.result(timeout=30),
                exitcode=process.exitcode,
            )
        """,
    )
    assert seen == {
        "type": "ForkPopen",
        "piped": "piped",
        "queued": 10,
        "result": 11,
        "exitcode": 0,
    }


def test_a_child_of_an_asyncio_program_has_no_wakeup_descriptor(tmp_path: Path) -> None:
    """asyncio's loop points signal wake-ups at its own socket; a child forked from the
    program must not write its signals into the descriptor that number now names."""
    seen = run_program(
        tmp_path,
        """
        import asyncio

        def wakeup_fd(_):
            return signal.set_wakeup_fd(-1)

        async def main():
            # A signal handler of the loop's own: asyncio then sets the wake-up descriptor.
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, lambda: None)
            ours = signal.set_wakeup_fd(-1)
            signal.set_wakeup_fd(ours)
            with procpool.Pool(1) as pool:
                return ours, popen_types(pool), await pool.apply_async(wakeup_fd, (0,))

        if __name__ == "__main__":
            ours, types, theirs = asyncio.run(main())
            report(ours_set=ours != -1, types=types, theirs=theirs)
        """,
    )
    assert seen == {"ours_set": True, "types": ["ForkPopen"], "theirs": -1}


def test_a_dead_zygote_is_replaced_at_the_next_single_threaded_start(tmp_path: Path) -> None:
    seen = run_program(
        tmp_path,
        """
        if __name__ == "__main__":
            old = make_zygote()
            old_pid = old.pid
            os.kill(old_pid, signal.SIGKILL)
            fd = os.pidfd_open(old_pid)
            multiprocessing.connection.wait([fd])
            os.close(fd)
            gone = not old.alive()
            with procpool.Pool(1) as first:
                # The program has threads now: the new zygote serves this pool.
                with procpool.Pool(1) as second:
                    report(
                        gone=gone,
                        new=_zygote._state.zygote.pid != old_pid,
                        types=[popen_types(first), popen_types(second)],
                        served_by_new=ppid(second._pool[0].pid) == _zygote._state.zygote.pid,
                        results=[first.apply(abs, (-2,)), second.apply(abs, (-3,))],
                    )
        """,
    )
    assert seen == {
        "gone": True,
        "new": True,
        "types": [["ForkPopen"], ["Popen"]],
        "served_by_new": True,
        "results": [2, 3],
    }


def test_the_zygote_exits_with_the_program(tmp_path: Path) -> None:
    seen = run_program(
        tmp_path,
        """
        if __name__ == "__main__":
            report(zygote=make_zygote().pid)
        """,
    )
    assert wait_gone({seen["zygote"]}, timeout=LIMIT) == set()


def test_children_never_collect_the_programs_garbage(tmp_path: Path) -> None:
    """Garbage the program had not collected yet when a child was forked stays the program's:
    a child's collection must not run its finalizers (which could close descriptor numbers the
    child has reused), whether the child was forked from the program or from the zygote."""
    seen = run_program(
        tmp_path,
        """
        import gc

        LOG = os.path.abspath("finalized.log")

        class Noisy:
            def __del__(self):
                with open(LOG, "a") as log:
                    log.write(f"{os.getpid()}\\n")

        def collect(_):
            return gc.collect()

        if __name__ == "__main__":
            gc.disable()
            cycle = Noisy()
            cycle.self = cycle
            del cycle
            with procpool.Pool(1) as first, procpool.Pool(1) as second:
                types = [popen_types(first), popen_types(second)]
                first.apply(collect, (0,))
                second.apply(collect, (0,))
            gc.enable()
            gc.collect()
            with open(LOG) as log:
                report(types=types, finalized_in=[int(pid) == os.getpid() for pid in log])
        """,
    )
    assert seen == {"types": [["ForkPopen"], ["Popen"]], "finalized_in": [True]}


def test_a_child_forked_from_the_program_unpickles_its_process_object(tmp_path: Path) -> None:
    """A child forked from the program gets its process object unpickled, as a fork server's
    child does, not the copy it inherited: an argument that leaves its pipe out of its pickled
    state and makes a new one in ``__setstate__`` works in the child (the inherited copy would
    hold a descriptor the child has closed). Whatever the child cannot be given is refused, as
    by a fork server."""
    seen = run_program(
        tmp_path,
        """
        class Reconnecting:
            def __init__(self):
                self.reader, self.writer = os.pipe()

            def __getstate__(self):
                return {}

            def __setstate__(self, state):
                self.__init__()

        def works(arg):
            os.write(arg.writer, b"x")
            return os.read(arg.reader, 1) == b"x"

        def refused():
            try:
                procpool.Process(target=works, args=(threading.Lock(),)).start()
            except TypeError as exc:
                return "pickle" in str(exc)
            return False

        if __name__ == "__main__":
            process = procpool.Process(target=works, args=(Reconnecting(),))
            process.start()
            report(
                type=type(process._popen).__name__,
                works=process.result(timeout=30),
                refused=refused(),
            )
        """,
    )
    assert seen == {"type": "ForkPopen", "works": True, "refused": True}


def test_the_zygote_idles_until_its_first_request_and_ignores_ctrl_c(tmp_path: Path) -> None:
    """While the program starts its first workers, the zygote does nothing but wait (it sets
    itself up at its first request); it ignores Ctrl-C from the start, and the processes it
    forks get the program's handler back."""
    seen = run_program(
        tmp_path,
        """
        def descriptor_kinds(pid):
            kinds = set()
            for entry in os.listdir(f"/proc/{pid}/fd"):
                if int(entry) > 2:
                    target = os.readlink(f"/proc/{pid}/fd/{entry}")
                    kinds.add(target.split(":")[0] if ":" in target else "file")
            return sorted(kinds)

        def ignores_interrupt(pid):
            with open(f"/proc/{pid}/status") as status:
                ignored = next(line for line in status if line.startswith("SigIgn:"))
            mask = int(ignored.split()[1], 16)
            return bool(mask & (1 << (signal.SIGINT - 1)))

        def has_default_interrupt_handler():
            return signal.getsignal(signal.SIGINT) is signal.default_int_handler

        if __name__ == "__main__":
            pid = make_zygote().pid
            idle = descriptor_kinds(pid)
            release = threading.Event()
            thread = threading.Thread(target=release.wait)
            thread.start()
            try:
                process = procpool.Process(target=has_default_interrupt_handler)
                process.start()
                report(
                    idle=idle,
                    ignores_interrupt=ignores_interrupt(pid),
                    type=type(process._popen).__name__,
                    child_handler=process.result(timeout=30),
                    serving=descriptor_kinds(pid),
                )
            finally:
                release.set()
                thread.join()
        """,
    )
    # Its signal pipe (and selector) come with its first request.
    assert "pipe" not in seen.pop("idle")
    assert "pipe" in seen.pop("serving")
    assert seen == {"ignores_interrupt": True, "type": "Popen", "child_handler": True}


def test_the_last_of_a_small_pools_first_workers_forks_the_zygote(tmp_path: Path) -> None:
    """A pool's first workers are one burst: in a small program the last forks the zygote, so
    that the first (which takes the first task) does not wait for that fork; in a large one
    (a fork of it is slow) the first does, as the program forks the others. A burst cut short
    leaves the next process started directly to fork it."""
    seen = run_program(
        tmp_path,
        """
        def wait_for(reader):
            reader.recv_bytes()

        def forked_by_when_large():
            os.kill(_zygote._state.zygote.pid, signal.SIGKILL)
            _zygote._state.zygote.forget()  # the next start makes a new one
            _zygote._state.zygote = None
            ballast = bytearray(_zygote._LARGE + 2**24)  # written: resident
            with procpool.Pool(3) as pool:
                workers = [w.pid for w in pool._pool]
                forked_by = workers.index(ppid(_zygote._state.zygote.pid))
            del ballast
            return forked_by

        if __name__ == "__main__":
            with procpool.Pool(3) as pool:
                zygote_parent = ppid(_zygote._state.zygote.pid)
                workers = [w.pid for w in pool._pool]
                pool_zygote = _zygote._state.zygote.pid
            os.kill(pool_zygote, signal.SIGKILL)
            fd = os.pidfd_open(pool_zygote)
            multiprocessing.connection.wait([fd])
            os.close(fd)
            reader, writer = multiprocessing.Pipe(duplex=False)
            with _zygote.burst(3):  # only one of the three comes
                first = procpool.Process(target=wait_for, args=(reader,))
                first.start()
                made_in_burst = _zygote._state.zygote.alive()
            second = procpool.Process(target=wait_for, args=(reader,))
            second.start()
            report(
                forked_by=workers.index(zygote_parent),
                made_in_burst=made_in_burst,
                forked_by_second=ppid(_zygote._state.zygote.pid) == second.pid,
                forked_by_when_large=forked_by_when_large(),
            )
            writer.send_bytes(b"")
            writer.send_bytes(b"")
            first.join()
            second.join()
        """,
    )
    assert seen == {
        "forked_by": 2,
        "made_in_burst": False,
        "forked_by_second": True,
        "forked_by_when_large": 0,
    }
