"""Fixtures of the process-level fault tests (test_faults.py, test_fault_tolerance.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import procpool

TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:  # workers find the task modules through sys.path (spawn copies it)
    sys.path.insert(0, TESTS_DIR)

from _helpers import Rendezvous  # noqa: E402
from _pools import WAIT, Audit  # noqa: E402


@pytest.fixture(params=["fork", "spawn", "forkserver"])
def method(request: pytest.FixtureRequest) -> str:
    """Each start method in turn (pyproject's filter accepts fork's warning about threads)."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def audit() -> Audit:
    return Audit()


@pytest.fixture
def pools(method: str) -> Iterator[Callable[..., procpool.Pool]]:
    """Makes pools for the test's start method; terminates whatever the test left running."""
    made: list[procpool.Pool] = []

    def make(processes: int = 2, **kwargs: Any) -> procpool.Pool:
        pool = procpool.Pool(processes, context=procpool.get_context(method), **kwargs)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.terminate()
        pool.join()


@pytest.fixture
def rendezvous() -> Iterator[Rendezvous]:
    with Rendezvous(timeout=WAIT) as r:
        yield r
