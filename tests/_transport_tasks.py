"""Task functions for ``test_transport.py`` (the standard library, and numpy where a task is
asked for arrays: numpy is imported inside those tasks only, so a worker that never sees an array
never loads it).

Both the test and the workers call :func:`describe`, so that what a worker received and what the
test sent (or what the test received and the worker made) compare as plain data: types, dtypes,
shapes and a hash of the contents.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from _helpers import checkin

# What ``keep`` holds on to in the worker: its arguments, alive across tasks.
_kept: list[Any] = []


def describe(value: Any) -> Any:
    """A summary of ``value`` two processes compute alike, down into dicts, lists and tuples."""
    if isinstance(value, dict):
        return ("dict", {key: describe(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [describe(item) for item in value])
    if isinstance(value, (bytes, bytearray, memoryview)) or hasattr(value, "__array__"):
        view = memoryview(value)
        dtype = str(getattr(value, "dtype", view.format))
        # tobytes() reads a strided view in logical (C) order: a copy compares equal.
        digest = hashlib.sha256(view.tobytes()).hexdigest()
        return (type(value).__name__, dtype, tuple(view.shape), view.nbytes, digest)
    if isinstance(value, str):
        return ("str", len(value), hashlib.sha256(value.encode()).hexdigest())
    return repr(value)


def describe_all(*values: Any) -> list[Any]:
    return [describe(value) for value in values]


def make(kind: str, size: int, fill: int) -> Any:
    """A value of ``kind`` with ``size`` bytes, every byte ``fill`` (numpy kinds: ``np-<dtype>``,
    the array as long as ``size`` bytes allow)."""
    data = bytes([fill]) * size
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(bytearray(data))
    if kind == "str":
        return chr(ord("a") + fill % 26) * size  # pickled in band
    if kind.startswith("np-"):
        import numpy as np

        return np.frombuffer(bytearray(data), dtype=kind[3:])
    raise ValueError(kind)


def roundtrip(value: Any) -> tuple[Any, Any]:
    """What this worker received, and the value itself sent back."""
    return describe(value), value


def plus_one(value: Any) -> Any:
    """A new array (or bytes) of the same size: the argument plus one, byte-wise."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes((b + 1) % 256 for b in bytes(value[:16])) + bytes(value[16:])
    return value + 1


def keep(value: Any, how: str = "whole") -> Any:
    """Keep a reference to the argument in this worker (``whole``, or ``slice``: a view of part
    of it); return what arrived."""
    _kept.append(value if how == "whole" else value[100:200])
    return describe(value)


def kept() -> list[Any]:
    """What the kept references see now."""
    return [describe(value) for value in _kept]


def receive_then_block(address: str, value: Any) -> Any:
    """Check in once the (large) argument has arrived, wait for the test, then describe it."""
    with checkin(address) as sock:
        sock.settimeout(None)
        sock.recv(1)
    return describe(value)


def block_then_return(address: str, kind: str, size: int, fill: int) -> Any:
    """Make a large value, check in, wait for the test, then return the value: the test kills or
    stops this worker while the value is on its way."""
    value = make(kind, size, fill)
    with checkin(address) as sock:
        sock.settimeout(None)
        sock.recv(1)
    return value


def getpid() -> int:
    return os.getpid()
