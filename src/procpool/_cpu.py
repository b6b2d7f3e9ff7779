"""How many CPUs this process may really use.

``os.cpu_count()`` counts the machine's CPUs; a process pinned to fewer CPUs (an affinity mask,
``taskset``) or capped by a container's CPU quota (a cgroup) may use far fewer, and a pool sized
to the machine then only adds contention.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["cpu_count"]

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_count() -> int:
    """The CPUs this process may use: its affinity mask, capped by any cgroup CPU quota; >= 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(Path("/proc/self/cgroup"), _CGROUP_ROOT)
    if quota is not None:
        count = min(count, quota)
    return max(1, count)


def cgroup_cpu_quota(membership: Path, root: Path) -> int | None:
    """The tightest CPU quota (rounded up to whole CPUs) over this process's cgroups, if any.

    ``membership`` is ``/proc/self/cgroup``; quotas are looked up under ``root`` for the
    process's own cgroup and each of its ancestors, in cgroup v2 (``cpu.max``) and v1
    (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) layouts.
    """
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            limits += _walk(root, path, _v2_limit)
        elif "cpu" in controllers.split(","):
            limits += _walk(root / controllers, path, _v1_limit)
    return min(limits, default=None)


def _walk(base: Path, path: str, read: Callable[[Path], int | None]) -> list[int]:
    found = []
    parts = [p for p in path.split("/") if p]
    for depth in range(len(parts), -1, -1):
        limit = read(base.joinpath(*parts[:depth]))
        if limit is not None:
            found.append(limit)
    return found


def _v2_limit(directory: Path) -> int | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def _v1_limit(directory: Path) -> int | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period))
