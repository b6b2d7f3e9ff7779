"""What the figures were measured on, and what else was using the CPUs meanwhile (Linux).

A shared machine's other work slows every library alike only if it is steady; the suite records
it per sample (``LoadSampler``) so that a reader can see when it was not.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import resource
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PACKAGES = ("procpool", "numpy", "scipy", "loky", "mpire", "billiard", "cloudpickle")


def cpu_model() -> str:
    """The CPU's name as the kernel reports it."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def meminfo_bytes(field: str) -> int:
    """A ``/proc/meminfo`` field (``MemTotal``, ``MemAvailable``) in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def memory_gib() -> float:
    """The machine's memory in GiB."""
    return meminfo_bytes("MemTotal") / 2**30


def versions() -> dict[str, str]:
    """The installed version of each package the figures depend on."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def git_commit(directory: Path) -> str:
    """The commit of the checkout the suite runs from, if it is one."""
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip()


def machine_info() -> dict[str, object]:
    """Cores, CPU, memory, OS, Python, package versions, commit and the date (UTC)."""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "memory_gib": round(memory_gib(), 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": versions(),
        "commit": git_commit(Path(__file__).resolve().parent),
    }


def busy_and_total_ticks() -> tuple[int, int]:
    """The machine's busy and total CPU ticks since boot, all CPUs together."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    # guest and guest_nice (fields 8, 9) are already counted in user and nice.
    total = sum(fields[:8])
    return total - idle, total


def cpu_seconds(who: int) -> float:
    """CPU time of this process (all its threads, the sampler's included: ``RUSAGE_SELF``) or
    of the children it has waited for (``RUSAGE_CHILDREN``)."""
    used = resource.getrusage(who)
    return used.ru_utime + used.ru_stime


def load_average() -> float:
    """The one-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def processes() -> dict[int, tuple[str, int, int]]:
    """Every process's name, session id and CPU ticks so far (user and system)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry.name)] = (name, int(fields[3]), int(fields[11]) + int(fields[12]))
    return found


class LoadSampler:
    """What the rest of the machine did while one runner ran, polled every ``interval`` seconds.

    The runner leads a session of its own, which its pool's processes inherit (fork servers and
    workers alike, whoever reaps them): the CPU time of that session's processes, as last seen
    alive, is ours; so is that of the children this process waited for (the runner, and through
    it every worker it reaped), whichever is larger, plus this process's own. The machine's busy
    time (``/proc/stat``) less ours is foreign. A process of ours that no one here reaps (a fork
    server's worker) and that ends between two polls counts its last interval as foreign.
    Foreign processes seen at two polls or more are named, busiest first; short-lived ones
    count in the load but not by name.
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.busy, self.total = busy_and_total_ticks()
        self.wall = time.monotonic()
        self.own = cpu_seconds(resource.RUSAGE_SELF)
        self.children = cpu_seconds(resource.RUSAGE_CHILDREN)
        self.session = -1
        self.ours: dict[int, int] = {}
        self.first: dict[int, tuple[str, int]] = {}
        self.last: dict[int, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)

    def watch(self, session: int) -> None:
        """Start polling, counting the processes of ``session`` as ours."""
        self.session = session
        self.thread.start()

    def _run(self) -> None:
        self._poll()
        while not self.stop.wait(self.interval):
            self._poll()

    def _poll(self) -> None:
        for pid, (name, session, ticks) in processes().items():
            if session == self.session:
                self.ours[pid] = ticks
            elif pid != os.getpid():
                self.first.setdefault(pid, (name, ticks))
                self.last[pid] = ticks

    def read(self) -> dict[str, Any]:
        """Stop polling; the busy fraction of all CPUs, the foreign part (also in CPUs), the
        load average and the busiest foreign processes by name."""
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
        busy, total = busy_and_total_ticks()
        capacity = max(total - self.total, 1) / CLOCK_TICKS  # CPU-seconds all CPUs had
        busy_seconds = (busy - self.busy) / CLOCK_TICKS
        session = sum(self.ours.values()) / CLOCK_TICKS
        reaped = cpu_seconds(resource.RUSAGE_CHILDREN) - self.children
        ours = max(session, reaped) + cpu_seconds(resource.RUSAGE_SELF) - self.own
        foreign = max(busy_seconds - ours, 0.0)
        by_name: dict[str, float] = {}
        for pid, (name, ticks) in self.first.items():
            if self.last[pid] > ticks:
                by_name[name] = by_name.get(name, 0.0) + (self.last[pid] - ticks) / CLOCK_TICKS
        return {
            "busy": round(busy_seconds / capacity, 3),
            "foreign": round(foreign / capacity, 3),
            "foreign_cpus": round(foreign / max(time.monotonic() - self.wall, 1e-9), 3),
            "loadavg": load_average(),
            "foreign_processes": {n: round(c, 2) for n, c in by_name.items()},
        }
