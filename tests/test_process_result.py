"""``procpool.Process.result()``: the child's return value, its exception, or how it died."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest

import procpool
import procpool.pool
from procpool import Process


class Returns(Process):
    def run(self) -> Any:
        return ("from run", self.name)


def raises() -> None:
    raise KeyError("the child's own error")


def killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def exits() -> None:
    os._exit(7)


def hangs() -> None:
    threading.Event().wait()


def unpicklable() -> Any:
    return lambda: None


def started(method: str, **kwargs: Any) -> Process:
    process = procpool.get_context(method).Process(**kwargs)
    process.start()
    return process


def test_returns_the_targets_value(method: str) -> None:
    process = started(method, target=lambda x, y: {"sum": x + y}, args=(40, 2))
    process.join()
    assert process.result() == {"sum": 42}
    assert process.result() == {"sum": 42}  # asked again: the same value
    assert process.exitcode == 0
    process.close()


def test_a_large_value_does_not_block_join(method: str) -> None:
    # Larger than a pipe's buffer: the parent reads it while it joins.
    process = started(method, target=lambda: b"x" * 5_000_000)
    process.join()
    assert process.exitcode == 0
    assert len(process.result()) == 5_000_000


def test_subclass_run_value(method: str) -> None:
    process = Returns(name="worker-7")
    process._start_method = method
    process.start()
    assert process.result(timeout=60) == ("from run", "worker-7")


def test_reraises_the_childs_exception_with_its_traceback(method: str) -> None:
    process = started(method, target=raises)
    with pytest.raises(KeyError, match="the child's own error") as caught:
        process.result()
    assert isinstance(caught.value.__cause__, procpool.pool.RemoteTraceback)
    assert 'raise KeyError("the child\'s own error")' in str(caught.value.__cause__)
    assert process.exitcode == 1


def test_killed_or_exited_without_a_result(method: str) -> None:
    process = started(method, target=killed)
    with pytest.raises(procpool.WorkerLostError, match="SIGKILL") as caught:
        process.result()
    assert caught.value.exitcode == -signal.SIGKILL
    process = started(method, target=exits)
    with pytest.raises(procpool.WorkerLostError, match="exited with code 7"):
        process.result()


def test_timeout_never_started_and_unpicklable(method: str) -> None:
    process = started(method, target=hangs)
    try:
        with pytest.raises(procpool.TimeoutError):
            process.result(timeout=0.1)
    finally:
        process.kill()
        process.join()
    with pytest.raises(procpool.WorkerLostError, match="SIGKILL"):
        process.result()
    with pytest.raises(ValueError, match="never started"):
        Process(target=print).result()
    bad = started(method, target=unpicklable)
    with pytest.raises(procpool.pool.MaybeEncodingError):
        bad.result()


def test_no_descriptor_leaks(method: str) -> None:
    warm = started(method, target=lambda: 0)  # a fork server, say, keeps descriptors of its own
    assert warm.result() == 0
    warm.close()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        process = started(method, target=lambda: 1)
        assert process.result() == 1
        process.close()
    assert len(os.listdir("/proc/self/fd")) <= before
