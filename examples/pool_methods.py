"""The pool's submission methods, synchronous and asynchronous. (The seed document's section 2.)

    python examples/pool_methods.py

``apply`` blocks until its call returns; ``apply_async`` and ``map_async`` return an
``AsyncResult`` at once (``ready()``, ``successful()``, ``get(timeout)``); ``map`` returns the
list; ``imap`` yields results in order as they are ready and ``imap_unordered`` as they finish.
"""

from __future__ import annotations

from procpool import Pool


def square(x: int) -> int:
    return x * x


def add(x: int, y: int) -> int:
    return x + y


def main() -> None:
    with Pool(processes=4) as pool:
        print("map:", pool.map(square, range(10)))
        print("apply:", pool.apply(add, (2, 3)))

        result = pool.apply_async(square, (7,))
        print("apply_async:", result.get(timeout=10))
        print("ready:", result.ready(), "successful:", result.successful())

        batch = pool.map_async(square, range(5))
        print("map_async:", batch.get(timeout=10))

        print("imap:", list(pool.imap(square, range(6))))
        # Completion order varies from run to run: sorted here to print the same every time.
        print("imap_unordered (sorted):", sorted(pool.imap_unordered(square, range(6))))
        print("starmap:", pool.starmap(add, [(1, 2), (3, 4)]))


if __name__ == "__main__":
    main()
