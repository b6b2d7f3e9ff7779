"""The functions the benchmark's workers run, importable without importing procpool.

This directory is put on ``PYTHONPATH`` for every benchmark process, so each library's workers
unpickle these functions by importing this small module alone (the standard library only, numpy
when a task handles arrays): no library pays for importing another's code in its workers.
"""

from __future__ import annotations

import time
from typing import Any


def square(x: int) -> int:
    """The tiny task: per-task overhead dominates."""
    return x * x


def spin(iterations: int) -> int:
    """CPU work that takes a known time (busy, unlike ``sleep``: it needs a core)."""
    return sum(range(iterations))


def identity(payload: Any) -> Any:
    """Send the payload back: a round trip of its bytes."""
    return payload


def nap(seconds: float) -> float:
    """Warm-up only: holding a worker a moment spreads the warm-up tasks over all workers."""
    time.sleep(seconds)
    return seconds


def warm_numpy(seconds: float) -> float:
    """Warm-up for array workloads: the worker imports numpy before the timing starts."""
    import numpy  # noqa: F401

    return nap(seconds)


def array_probe(array: Any) -> int:
    """Read one byte per page of an array: proof it arrived, at a negligible cost."""
    return int(array.reshape(-1).view("uint8")[::4096].sum())


def make_array(nbytes: int) -> Any:
    """Return a new array of ``nbytes`` bytes (written once, so every page is real)."""
    import numpy

    return numpy.full(nbytes, 7, dtype=numpy.uint8)
