"""Releasing a pool's resources: the context manager, close() then join(), terminate().

    python examples/shutdown.py

(The seed document's section 2.) ``close()`` accepts no new work and ``join()`` waits for the
work already submitted; ``terminate()`` stops the workers at once. A closed pool refuses new
work with ``ValueError``.
"""

from __future__ import annotations

from procpool import Pool


def double(x: int) -> int:
    return 2 * x


def main() -> None:
    with Pool(2) as pool:
        print("inside the block:", pool.map(double, range(4)))

    pool = Pool(2)
    pending = pool.map_async(double, range(5))
    pool.close()  # no new work...
    pool.join()  # ...and wait for what was submitted
    print("after close and join:", pending.get())
    try:
        pool.apply(double, (1,))
    except ValueError as e:
        print("a closed pool refuses work:", e)

    pool = Pool(2)
    print("before terminate:", pool.apply(double, (21,)))
    pool.terminate()  # stop at once
    pool.join()
    print("terminated")


if __name__ == "__main__":
    main()
