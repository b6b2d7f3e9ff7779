"""How fast procpool recovers from faults: worker deaths, task timeouts, Ctrl-C.

    python benchmarks/bench_recovery.py [--repeat 10]

For each start method: the time from SIGKILL of a busy worker to ``WorkerLostError`` in
``get()``, and to a full pool that has answered a new task; how late after its deadline a
``timeout=0.5`` task fails; and, for the default start method, the time from Ctrl-C (SIGINT to the
process group of a script blocked in ``map``) to the script's exit with every worker gone.
Medians of ``--repeat`` runs. The standard library has no equivalent to compare with: its pool
never reports a dead worker, has no task timeout, and leaves workers running after Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import procpool

_CTRL_C_SCRIPT = """
import sys, time, procpool
def nap(x):
    time.sleep(60)
if __name__ == "__main__":
    with procpool.Pool(2) as pool:
        print(" ".join(str(w.pid) for w in pool._pool), flush=True)
        pool.map(nap, range(4), chunksize=1)
"""


def report_pid_and_wait(path: str) -> None:
    """(In a worker) Say which process runs this task, then run until killed."""
    Path(path).write_text(str(os.getpid()))
    time.sleep(600)


def started_pid(path: Path) -> int:
    """Wait until the task running in a worker has written its pid to ``path``."""
    while not path.exists() or not path.read_text():
        time.sleep(0.0005)
    return int(path.read_text())


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def worker_deaths(method: str, repeat: int, scratch: Path) -> tuple[float, float]:
    to_error, to_full = [], []
    with procpool.Pool(2, context=procpool.get_context(method)) as pool:
        for i in range(repeat):
            path = scratch / f"{method}-death-{i}"
            result = pool.apply_async(report_pid_and_wait, (str(path),))
            pid = started_pid(path)
            killed = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            try:
                result.get(timeout=30)
            except procpool.WorkerLostError:
                to_error.append(time.perf_counter() - killed)
            while pid in [w.pid for w in pool._pool] or len(pool._pool) < 2:
                time.sleep(0.0005)
            assert pool.apply(abs, (-3,)) == 3
            to_full.append(time.perf_counter() - killed)
    return statistics.median(to_error), statistics.median(to_full)


def timeouts(method: str, repeat: int, scratch: Path) -> float:
    late = []
    with procpool.Pool(2, context=procpool.get_context(method)) as pool:
        for i in range(repeat):
            path = scratch / f"{method}-timeout-{i}"
            result = pool.apply_async(report_pid_and_wait, (str(path),), timeout=0.5)
            started_pid(path)
            started = time.perf_counter()
            try:
                result.get(timeout=30)
            except procpool.TaskTimeoutError:
                late.append(time.perf_counter() - started - 0.5)
    return statistics.median(late)


def ctrl_c(repeat: int) -> float:
    times = []
    for _ in range(repeat):
        script = subprocess.Popen(
            [sys.executable, "-c", _CTRL_C_SCRIPT],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        assert script.stdout is not None
        workers = [int(pid) for pid in script.stdout.readline().split()]
        time.sleep(0.5)  # let map() block: this is a measurement, not a test
        pressed = time.perf_counter()
        os.killpg(script.pid, signal.SIGINT)
        script.wait(30)
        while not all(gone(pid) for pid in workers):
            time.sleep(0.0005)
        times.append(time.perf_counter() - pressed)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for method in ("fork", "spawn", "forkserver"):
            error, full = worker_deaths(method, args.repeat, scratch)
            late = timeouts(method, args.repeat, scratch)
            print(
                f"{method:10} SIGKILL -> WorkerLostError {error * 1000:6.1f} ms, "
                f"-> pool full and answering {full * 1000:6.1f} ms; "
                f"timeout=0.5 fails {late * 1000:5.1f} ms after its deadline"
            )
    print(
        f"Ctrl-C -> script exited, workers gone: {ctrl_c(max(3, args.repeat // 2)) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
