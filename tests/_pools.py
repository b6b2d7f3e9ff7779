"""What the process-level fault tests share: the bound on every wait, and the process audit.

Test processes only (workers never import this module, so it may import pytest's world).
"""

from __future__ import annotations

import os

import procpool
from _helpers import child_processes, helper_pids, is_gone, stat

# A wait that should end at once; generous for a loaded 2-core machine, far below the timeout.
WAIT = 30.0


class Audit:
    """Which processes existed before the test, and which workers the test saw."""

    def __init__(self) -> None:
        self.before = child_processes()
        self.workers: set[int] = set()

    def note(self, pool: procpool.Pool) -> set[int]:
        pids = {p.pid for p in pool._pool}
        self.workers |= pids
        return pids

    def check(self) -> None:
        """No worker outlives the pool, and no child is left a zombie: call after close() or
        terminate() and join()."""
        leftover = child_processes() - self.before
        alive = {pid for pid in self.workers if not is_gone(pid)}
        assert not leftover, f"processes left behind: {sorted(leftover)}"
        assert not alive, f"workers still alive: {sorted(alive)}"
        assert not zombies(), f"zombie children: {sorted(zombies())}"


def zombies() -> set[int]:
    """Children of this process (or of the fork server) that exited and were never reaped."""
    parents = {os.getpid(), *helper_pids()}
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = stat(int(entry))
            if info is not None and info[0] == "Z" and info[1] in parents:
                found.add(int(entry))
    return found


def live_workers(pool: procpool.Pool, audit: Audit) -> set[int]:
    """The pool's workers that are alive (``_pool`` may still list one that just died)."""
    return {pid for pid in audit.note(pool) if not is_gone(pid)}


def close_and_check(pool: procpool.Pool, audit: Audit) -> None:
    audit.note(pool)
    pool.close()
    pool.join()
    assert pool._pool == []
    audit.check()
