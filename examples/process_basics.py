"""Creating child processes, directly and by subclassing. (The seed document's section 1.)

    python examples/process_basics.py

Two processes run ``worker`` with positional and keyword arguments; two more are a ``Process``
subclass that overrides ``run()``. The parent starts them, waits with ``join()`` and reads
``name``, ``daemon``, ``is_alive()`` and ``exitcode``.
"""

from __future__ import annotations

import sys
import time

from procpool import Process


def say(line: str) -> None:
    """Print a line in one write: lines from processes that run at once stay whole."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def worker(label: str, steps: int, duration: float = 0.01) -> None:
    """A child's work: a few steps of ``duration`` seconds each."""
    for step in range(1, steps + 1):
        time.sleep(duration)
        say(f"worker {label}: step {step} of {steps}")


class Counter(Process):
    """A process defined by subclassing: ``run()`` is what the child does."""

    def __init__(self, label: str, upto: int) -> None:
        super().__init__()
        self.name = f"counter-{label}"
        self.upto = upto

    def run(self) -> None:
        say(f"{self.name}: total {sum(range(self.upto + 1))}")


def main() -> None:
    direct = [
        Process(target=worker, args=("A", 2), kwargs={"duration": 0.01}, name="worker-A"),
        Process(target=worker, args=("B", 3), name="worker-B", daemon=True),
    ]
    for process in direct:
        process.start()
    for process in direct:
        process.join()
        say(f"{process.name}: daemon={process.daemon} alive={process.is_alive()}")
        say(f"{process.name}: exit code {process.exitcode}")

    counters = [Counter("x", 10), Counter("y", 100)]
    for counter in counters:
        counter.start()
    for counter in counters:
        counter.join()
        say(f"{counter.name} finished with exit code {counter.exitcode}")


if __name__ == "__main__":
    main()
