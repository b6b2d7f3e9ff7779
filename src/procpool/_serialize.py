"""How functions, arguments and outcomes are turned into bytes and back in the parent.

* Functions travel with cloudpickle: importable functions by reference (cheap), lambdas, closures
  and functions defined in ``__main__`` by value, so they work under every start method and from a
  REPL or notebook.
* Arguments travel with pickle protocol 5; only where pickle refuses (a lambda inside the
  arguments, say) does cloudpickle take over.
* Results and exceptions come back with plain pickle, as in ``multiprocessing.Pool``: a result
  that cannot be pickled fails its task with ``MaybeEncodingError``.
"""

from __future__ import annotations

import pickle
from typing import Any

from ._errors import TaskDecodeError, attach_remote_traceback
from ._protocol import PROTOCOL, decode_exception_parts

__all__ = ["decode_exception", "dumps", "dumps_callable", "loads"]

loads = pickle.loads


def dumps_callable(func: Any) -> bytes:
    """Pickle a function so that any worker can call it, whatever the start method."""
    import cloudpickle

    return cloudpickle.dumps(func, protocol=PROTOCOL)  # type: ignore[no-any-return]


def dumps(obj: Any) -> bytes:
    """Pickle task arguments: plain pickle, or cloudpickle for what plain pickle refuses."""
    try:
        return pickle.dumps(obj, protocol=PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        # Lambdas, closures and local classes inside the arguments: pickle them by value.
        return dumps_callable(obj)


def decode_exception(payload: bytes | memoryview) -> BaseException:
    """Rebuild an exception a worker sent, with the worker's traceback as ``__cause__``.

    An exception that pickled in the worker but cannot be unpickled here (a custom exception whose
    ``__init__`` takes other arguments, say) becomes a :class:`TaskDecodeError` that still names it
    and still carries the worker's traceback, where the standard library would hang.
    """
    exc_bytes, tb_text, summary = decode_exception_parts(payload)
    try:
        exc: BaseException = pickle.loads(exc_bytes)
    except Exception as error:
        exc = TaskDecodeError(
            f"the task raised {summary}, which could not be unpickled in the parent: {error!r}"
        )
    return attach_remote_traceback(exc, tb_text)
