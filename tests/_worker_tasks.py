"""Functions for a worker run in a thread of the test process (test_worker.py): they reach the
test through these module-level events."""

from __future__ import annotations

import threading

GATE = threading.Event()  # the first task waits for it
FIRST_STARTED = threading.Event()  # set by the first task
LATER_STARTED = threading.Event()  # set by the task queued behind the recalled one


def wait_for_gate(x: int) -> int:
    FIRST_STARTED.set()
    assert GATE.wait(30)
    return x


def note_start(x: int) -> int:
    LATER_STARTED.set()
    return x


def wait_at_two(x: int) -> int:
    """Item 2 says it started and waits for the gate; the others return at once."""
    if x == 2:
        FIRST_STARTED.set()
        assert GATE.wait(30)
    return x
