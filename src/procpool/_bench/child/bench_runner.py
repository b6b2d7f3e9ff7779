"""One library, one workload, in a fresh interpreter: the suite starts this once per sample.

    PYTHONPATH=<this directory> python <this directory>/bench_main.py SPEC

SPEC is a JSON object (library, workload, sizes, processes). The last line on stdout is a JSON
object: the workload's values and the pool's start method, or what the library lacks.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from bench_libraries import LIBRARIES, Unsupported
from bench_workloads import WORKLOADS, Context, Sizes, Workload


def warm_up(ctx: Context, workload: Workload) -> None:
    """Start the pool and run a few short tasks, so every worker has started before timing."""
    assert workload.warm_up is not None
    ctx.pool = ctx.new_pool()
    ctx.pool.map(workload.warm_up, [0.01] * (2 * ctx.processes), chunksize=1)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one sample; a call the library lacks is reported, not raised."""
    workload = WORKLOADS[spec["workload"]]
    ctx = Context(LIBRARIES[spec["library"]], Sizes(**spec["sizes"]), spec["processes"])
    try:
        if workload.warm_up is not None:
            warm_up(ctx, workload)
        values = workload.measure(ctx)
    except Unsupported as lacking:
        if ctx.pool is not None:
            ctx.pool.terminate()
        return {"unsupported": str(lacking), "start_method": ctx.start_method}
    if ctx.pool is not None and not workload.ends_pool:
        ctx.pool.close()
    return {"values": values, "start_method": ctx.start_method}


def main() -> None:
    """Read the spec from ``argv[1]``, print the outcome as the last line of stdout."""
    outcome = run(json.loads(sys.argv[1]))
    print(json.dumps(outcome), flush=True)
