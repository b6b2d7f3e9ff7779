"""The pool's advanced parameters: maxtasksperchild, initializer, chunksize. (The seed, section 3.)

    python examples/pool_options.py

Each worker runs ``init_worker`` when it starts, is replaced after 100 tasks
(``maxtasksperchild``, which bounds what a leaking task can accumulate), and ``map`` sends the
items ten at a time (``chunksize``, which matters for many small tasks).
"""

from __future__ import annotations

from procpool import Pool

_greeting = "not initialised"


def init_worker(greeting: str) -> None:
    """Runs once in each worker as it starts."""
    global _greeting
    _greeting = greeting


def square(x: int) -> int:
    return x * x


def greet(x: int) -> str:
    return f"{_greeting} {x}"


def main() -> None:
    with Pool(processes=4, maxtasksperchild=100, initializer=init_worker, initargs=("hi",)) as pool:
        squares = pool.map(square, range(1000), chunksize=10)
        print("sum of squares:", sum(squares), "count:", len(squares))
        print("initialised:", pool.map(greet, range(3)))


if __name__ == "__main__":
    main()
