"""Two real programs that nobody here wrote, run with ``multiprocessing.Pool`` and then with
procpool swapped in: emcee's ensemble sampler (``EnsembleSampler(..., pool=pool)``) and scipy's
``differential_evolution(..., workers=pool.map)``.

    python benchmarks/bench_real_programs.py [--reps 5] [--processes 2]

Each sample is a fresh interpreter that runs the program as a user's script would: numpy, scipy
and emcee imported at its top, then the pool made, the program run, the pool closed and joined.
Reported: medians over ``--reps`` interleaved repetitions of the seconds from making the pool to
its join (start-up included), and of the whole process's wall time (imports included), with the
ratio ``multiprocessing.Pool / procpool`` (above 1: procpool is faster). The programs are seeded:
both pools must produce the same chain and the same optimum, which is checked.
Needs the ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

LIBRARIES = ("multiprocessing", "procpool")

# emcee: a 5-dimensional Gaussian, 32 walkers, 300 steps (600 maps of 16 log-probabilities).
EMCEE_WALKERS, EMCEE_DIM, EMCEE_STEPS = 32, 5, 300
# differential_evolution: Rosenbrock in 5 dimensions, 40 generations of 75 evaluations.
DE_DIM, DE_GENERATIONS = 5, 40


def log_prob(theta: np.ndarray) -> float:
    """An uncorrelated Gaussian's log-density (emcee's quick-start model)."""
    return float(-0.5 * np.sum(theta**2))


def run_emcee(pool: Any) -> str:
    import emcee

    rng = np.random.default_rng(42)
    start = rng.normal(size=(EMCEE_WALKERS, EMCEE_DIM))
    sampler = emcee.EnsembleSampler(EMCEE_WALKERS, EMCEE_DIM, log_prob, pool=pool)
    sampler.random_state = np.random.mtrand.RandomState(7).get_state()
    sampler.run_mcmc(start, EMCEE_STEPS, progress=False)
    return hashlib.sha256(sampler.get_chain().tobytes()).hexdigest()[:16]


def run_differential_evolution(pool: Any) -> str:
    from scipy.optimize import differential_evolution, rosen

    result = differential_evolution(
        rosen,
        [(-5.0, 5.0)] * DE_DIM,
        maxiter=DE_GENERATIONS,
        tol=0.0,
        seed=1,
        polish=False,
        updating="deferred",
        workers=pool.map,
    )
    return hashlib.sha256(np.asarray(result.x).tobytes()).hexdigest()[:16]


PROGRAMS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "emcee": (
        f"emcee EnsembleSampler, {EMCEE_WALKERS} walkers x {EMCEE_STEPS} steps",
        run_emcee,
    ),
    "differential_evolution": (
        f"scipy differential_evolution(workers=pool.map), {DE_GENERATIONS} generations",
        run_differential_evolution,
    ),
}


def make_pool(library: str, processes: int) -> Any:
    """The library's pool, with its default start method, as the program would make it."""
    if library == "procpool":
        import procpool

        return procpool.Pool(processes)
    import multiprocessing

    return multiprocessing.Pool(processes)


def child(program: str, library: str, processes: int) -> None:
    """One sample, in this fresh interpreter: print the pool's seconds and the output's digest."""
    import emcee  # noqa: F401  # a program imports its libraries at its top
    import scipy.optimize  # noqa: F401

    if library == "procpool":
        import procpool  # noqa: F401
    else:
        import multiprocessing.pool  # noqa: F401
    start = time.perf_counter()
    pool = make_pool(library, processes)
    digest = PROGRAMS[program][1](pool)
    pool.close()
    pool.join()
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "digest": digest}), flush=True)


def sample(program: str, library: str, processes: int) -> dict[str, Any]:
    """Run one sample in a new interpreter; its figures and the process's wall time."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", program, library, "--processes", str(processes)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{program} with {library} failed:\n{done.stderr}")
    values: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    values["wall"] = wall
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (default 5)")
    parser.add_argument("--processes", type=int, default=2, help="workers per pool (default 2)")
    parser.add_argument("--child", nargs=2, metavar=("PROGRAM", "LIBRARY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        program, library = args.child
        child(program, library, args.processes)
        return 0
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rep in range(args.reps):
        for program in PROGRAMS:
            # Alternate which library goes first, so neither always runs on a warmer machine.
            for library in LIBRARIES if rep % 2 == 0 else LIBRARIES[::-1]:
                samples.setdefault((program, library), []).append(
                    sample(program, library, args.processes)
                )
    print(f"{args.processes} workers, medians of {args.reps} fresh processes each")
    print(f"{'program':62s} {'figure':22s} {'multiprocessing':>15s} {'procpool':>9s} {'ratio':>6s}")
    failed = False
    for program, (title, _) in PROGRAMS.items():
        digests = {s["digest"] for library in LIBRARIES for s in samples[(program, library)]}
        if len(digests) != 1:
            print(f"{title}: the outputs differ between runs or libraries: {sorted(digests)}")
            failed = True
        for key, figure in (("seconds", "pool start to join, s"), ("wall", "whole process, s")):
            base, ours = (
                statistics.median(s[key] for s in samples[(program, library)])
                for library in LIBRARIES
            )
            print(f"{title:62s} {figure:22s} {base:15.3f} {ours:9.3f} {base / ours:5.2f}x")
    print("ratio: multiprocessing.Pool's time / procpool's (above 1: procpool is faster)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
