"""``procpool bench``: procpool against ``multiprocessing.Pool`` on this machine, side by side.

It runs the repository's benchmark suite (``procpool._bench``, also ``benchmarks/run.py``):
each library in a fresh process, interleaved repetitions, medians, and ratios to the standard
library (above 1: procpool is better). By default a quick run of a few seconds; ``--full``
runs every workload, with every peer installed (loky, mpire, billiard: ``procpool[bench]``).
"""

from __future__ import annotations

import argparse

from ._common import Command

__all__ = ["COMMAND"]


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--full",
        action="store_true",
        help="every workload at full size, three repetitions, every peer installed (minutes)",
    )
    parser.add_argument("--workloads", help="comma-separated workloads to run (default: all)")


def _run(args: argparse.Namespace) -> int:
    from procpool._bench import main

    argv = [] if args.full else ["--quick"]
    if args.workers is not None:
        argv += ["--processes", str(args.workers)]
    if args.workloads:
        argv += ["--workloads", args.workloads]
    return main(argv)


COMMAND = Command(
    "Run procpool and multiprocessing.Pool side by side on this machine: each library in a "
    "fresh process, medians and ratios to the standard library (above 1: procpool is better). "
    "A quick run by default; --full runs every workload with every peer installed "
    "(pip install 'procpool[bench]').",
    _configure,
    _run,
)
