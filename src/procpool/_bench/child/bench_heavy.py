"""A task in a module that imports numpy and scipy.optimize, as scientific scripts do.

A worker that unpickles ``heavy_square`` imports this module, and numpy and scipy with it, unless
its start method gave it the parent's already-imported modules: the start-up workload measures
exactly that.
"""

from __future__ import annotations

import numpy
import scipy.optimize  # noqa: F401


def heavy_square(x: int) -> int:
    """The tiny task, defined where numpy and scipy are imported."""
    return int(numpy.int64(x) * x)
