"""Collecting asynchronous results while catching each task's exception. (The seed, section 2.)

    python examples/async_results.py

Six ``apply_async`` calls of ``cube``, one of which raises; each result is taken with
``get(timeout=3)`` in a try block, so one failure does not lose the others.
"""

from __future__ import annotations

from procpool import Pool


def cube(x: int) -> int:
    if x == 3:
        raise ValueError(f"cube refuses {x}")
    return x**3


def main() -> None:
    results: list[object] = []
    with Pool(processes=4) as pool:
        async_results = [pool.apply_async(cube, (i,)) for i in range(6)]
        for r in async_results:
            try:
                results.append(r.get(timeout=3))
            except Exception as e:
                results.append(f"task failed: {e}")
    for line in results:
        print(line)


if __name__ == "__main__":
    main()
