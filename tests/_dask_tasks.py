"""Task functions of the Dask backend's tests, imported by name on the Dask workers.

Standard library only, like ``_helpers``: the workers find this module through ``sys.path``
(LocalCluster's workers inherit it, the ``dask worker`` processes get ``PYTHONPATH``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from _helpers import checkin, crash

# What the pool's initializer set in this worker process.
_initialized: Any = None


def initialize(value: Any) -> None:
    global _initialized
    _initialized = value


def initialized(_: object = None) -> Any:
    """The initializer's value here, with this worker's pid."""
    return _initialized, os.getpid()


def spin(address: str) -> None:
    """Check in, then run Python code forever; check in again once stopped (by its timeout)."""
    checkin(address).close()
    try:
        while True:
            pass
    finally:
        checkin(address).close()


def fail_once(path: str) -> str:
    """Raise OSError the first time (no file at ``path`` yet), return "ok" afterwards."""
    marker = Path(path)
    if not marker.exists():
        marker.write_text("failed once")
        raise OSError("the first attempt fails")
    return "ok"


def lost_once(address: str, path: str) -> str:
    """The first time (no file at ``path`` yet), check in and wait to be killed; afterwards,
    return at once."""
    marker = Path(path)
    if marker.exists():
        return "ran again"
    marker.write_text("started")
    crash(address, "sigkill")
    raise AssertionError("unreachable: crash() does not return")
