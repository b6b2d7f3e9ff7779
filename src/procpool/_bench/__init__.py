"""procpool's benchmark suite: every library in a fresh process, medians, ratios to the stdlib.

    python benchmarks/run.py [--quick] [--write-docs] ...   (or: python -m procpool._bench)

Imported by the benchmark runner only, never by procpool itself. The modules under ``child/``
run in the measured processes and their workers; they are imported by top-level names (this
package puts their directory on ``sys.path``, and the suite on each runner's ``PYTHONPATH``) so
that no library's workers import procpool just to unpickle a benchmark task.
"""

from __future__ import annotations

import sys
from pathlib import Path

CHILD = Path(__file__).resolve().with_name("child")
if str(CHILD) not in sys.path:
    sys.path.append(str(CHILD))

from ._suite import main  # noqa: E402  (needs the child directory on sys.path)

__all__ = ["main"]
