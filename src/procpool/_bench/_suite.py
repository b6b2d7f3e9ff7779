"""The suite's parent process: the plan, one fresh runner per sample, the report.

For each repetition, for each workload, every library runs once, in an order that rotates from
one repetition to the next, so slow drifts of the machine's load spread over all libraries.
Each sample is a new interpreter (``child/bench_main.py``) in a session of its own: on a
timeout the whole process group, workers included, is killed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bench_tasks
from bench_libraries import BASELINE, LIBRARIES, Library
from bench_workloads import FULL, MB, QUICK, WORKLOADS, Sizes, Workload, fastest

from . import CHILD
from ._docs import write_docs
from ._limits import machine_limits
from ._machine import LoadSampler, machine_info, meminfo_bytes
from ._report import (
    Results,
    Sample,
    footnotes,
    load_summary,
    render_text,
    spread_summary,
    table_rows,
    write_json,
)

QUICK_LIBRARIES = (BASELINE, "procpool")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="procpool against multiprocessing.Pool and its peers: every library in a "
        "fresh process, interleaved repetitions, medians, ratios to multiprocessing.Pool "
        "(above 1: better than the standard library).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, one repetition, procpool and multiprocessing only",
    )
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default 3; quick 1)")
    parser.add_argument("--processes", type=int, default=2, help="workers per pool (default 2)")
    parser.add_argument(
        "--libs",
        help="comma-separated libraries (default: every one installed)"
        f"; known: {', '.join(LIBRARIES)}",
    )
    parser.add_argument("--workloads", help=f"comma-separated; known: {', '.join(WORKLOADS)}")
    parser.add_argument(
        "--big-mb",
        type=int,
        help="size of the big-array workload, 0 to skip it (default 1024; quick 0)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds one sample may take before it is killed (default 300)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="start no repetition after the first that would end past this (default: no limit)",
    )
    parser.add_argument("--json", type=Path, help="write the raw samples and medians here")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="rewrite DOCS_DIR/benchmarks.md, .png and .json from this run",
    )
    parser.add_argument(
        "--docs-dir",
        type=Path,
        default=Path("docs"),
        help="where --write-docs writes (default: docs)",
    )
    args = parser.parse_args(argv)
    unknown = set(split(args.libs)) - set(LIBRARIES) | set(split(args.workloads)) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown library or workload: {', '.join(sorted(unknown))}")
    return args


def split(names: str | None) -> list[str]:
    return [n.strip() for n in names.split(",") if n.strip()] if names else []


def calibrate() -> float:
    """``spin`` iterations per millisecond here: the same count goes to every library."""
    iterations = 200_000
    return iterations / (fastest(lambda: bench_tasks.spin(iterations)) * 1000)


def chosen_libraries(args: argparse.Namespace) -> list[str]:
    """The requested libraries in the registry's order, the baseline always first."""
    wanted = split(args.libs) or (list(QUICK_LIBRARIES) if args.quick else list(LIBRARIES))
    keys = [BASELINE] + [k for k in LIBRARIES if k in wanted and k != BASELINE]
    return [k for k in keys if LIBRARIES[k].installed() or k in wanted]


def why_not_run(library: Library, workload: Workload, sizes: Sizes) -> Sample | None:
    """A sample saying why this cell is empty, or None if it can run."""
    if not library.installed():
        return {"status": "missing", "reason": f"{library.module} is not installed"}
    missing = [m for m in workload.needs if importlib.util.find_spec(m) is None]
    if missing:
        return {"status": "missing", "reason": f"{', '.join(missing)} not installed"}
    if workload.skip and not getattr(sizes, workload.skip):
        return {"status": "skipped", "reason": f"{workload.skip} is 0"}
    # Copies of a big array coexist in the parent, the pipe's way and the worker: keep clear of
    # the out-of-memory killer, which would take a shared machine's other work with it.
    if workload.skip and meminfo_bytes("MemAvailable") < 6 * getattr(sizes, workload.skip) * MB:
        return {"status": "skipped", "reason": f"less than 6 x {workload.skip} MB memory free"}
    return None


def run_sample(spec: dict[str, Any], timeout: float) -> Sample:
    """One fresh runner for one library and workload; its outcome, load and duration."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHILD), env.get("PYTHONPATH")]))
    script = CHILD / WORKLOADS[spec["workload"]].script
    command = [sys.executable, str(script), json.dumps(spec)]
    load = LoadSampler()
    with subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as runner:
        load.watch(runner.pid)
        try:
            out, err = runner.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, signal.SIGKILL)
            out, err = runner.communicate()
            return {
                "status": "error",
                "reason": f"timed out after {timeout:g} s",
                "load": load.read(),
            }
    sample: Sample = {"load": load.read()}
    lines = out.strip().splitlines()
    if runner.returncode != 0 or not lines:
        tail = err.strip().splitlines()[-1:] or [f"exit status {runner.returncode}"]
        return {**sample, "status": "error", "reason": tail[0][:300], "stderr": err[-4000:]}
    outcome = json.loads(lines[-1])
    if "unsupported" in outcome:
        return {**sample, "status": "unsupported", "reason": outcome["unsupported"]}
    return {
        **sample,
        "status": "ok",
        "values": outcome["values"],
        "start_method": outcome["start_method"],
    }


def plan(libraries: list[str], workloads: list[str], reps: int) -> list[tuple[int, str, str]]:
    """(repetition, workload, library) in the order they run: libraries rotate per repetition."""
    order = []
    for rep in range(reps):
        for key in workloads:
            if rep >= (WORKLOADS[key].max_repetitions or reps):
                continue
            shift = rep % len(libraries)
            for library in libraries[shift:] + libraries[:shift]:
                if not LIBRARIES[library].startup_only or WORKLOADS[key].warm_up is None:
                    order.append((rep, key, library))
    return order


def over_budget(args: argparse.Namespace, started: float, rep_started: float) -> bool:
    """Whether another repetition, as long as the last one, would end past ``--max-minutes``."""
    limit: float | None = args.max_minutes
    if limit is None:
        return False
    now = time.monotonic()
    return now + (now - rep_started) > started + 60 * limit


def measure(
    args: argparse.Namespace, sizes: Sizes, libraries: list[str], workloads: list[str], reps: int
) -> tuple[list[Sample], int]:
    """Every sample of the plan (a cell that cannot run is recorded once, not run), and the
    number of repetitions done: fewer than asked if ``--max-minutes`` would be exceeded."""
    samples: list[Sample] = []
    steps = plan(libraries, workloads, reps)
    started = rep_started = time.monotonic()
    current = 0
    for step, (rep, key, library) in enumerate(steps, 1):
        if rep > current:  # repetition `current` is complete
            if over_budget(args, started, rep_started):
                print(f"stopping after {rep} repetition(s): --max-minutes", file=sys.stderr)
                return samples, rep
            current, rep_started = rep, time.monotonic()
        head = {"rep": rep, "workload": key, "library": library}
        empty = why_not_run(LIBRARIES[library], WORKLOADS[key], sizes)
        if empty is not None:
            if rep == 0:
                samples.append({**head, **empty})
            continue
        spec = {
            "library": library,
            "workload": key,
            "processes": args.processes,
            "sizes": dataclasses.asdict(sizes),
        }
        start = time.monotonic()
        sample = {**head, **run_sample(spec, args.timeout), "seconds": 0.0}
        sample["seconds"] = round(time.monotonic() - start, 3)
        samples.append(sample)
        print(
            f"[{step}/{len(steps)}] rep {rep + 1} {key} {library}: {sample['status']} "
            f"{sample.get('values', sample.get('reason', ''))} ({sample['seconds']:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
    return samples, reps


def main(argv: list[str] | None = None) -> int:
    """Run the suite, print the table; 0 if every sample ran or was legitimately empty."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    base = QUICK if args.quick else FULL
    big_mb = base.big_mb if args.big_mb is None else args.big_mb
    sizes = dataclasses.replace(base, big_mb=big_mb, iters_per_ms=calibrate())
    reps = args.reps or (1 if args.quick else 3)
    libraries = chosen_libraries(args)
    workloads = split(args.workloads) or list(WORKLOADS)
    machine = machine_info()
    # Before the first sample, while the machine is as quiet as the run will find it.
    limits = machine_limits(sizes, args.quick)
    samples, reps = measure(args, sizes, libraries, workloads, reps)
    results = Results(
        command=shlex.join(["python", "benchmarks/run.py", *argv]),
        machine=machine,
        sizes=sizes,
        processes=args.processes,
        repetitions=reps,
        libraries=libraries,
        workloads=workloads,
        samples=samples,
        limits=limits,
    )
    print(render_text(table_rows(results)))
    print("ratio in brackets: against multiprocessing.Pool, above 1 is better than the stdlib")
    for line in footnotes(results) + spread_summary(results) + load_summary(results):
        print(line)
    if args.json:
        write_json(results, args.json)
    if args.write_docs:
        write_json(results, args.docs_dir / "benchmarks.json")
        print(f"wrote {write_docs(results, args.docs_dir)}")
    return 1 if any(s["status"] == "error" for s in samples) else 0
