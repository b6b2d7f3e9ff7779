"""How functions, arguments and outcomes are turned into bytes and back in the parent.

* Functions travel by reference where the worker can import them (plain pickle, cheap): functions
  of importable modules, and functions defined at the top level of a ``__main__`` script, which
  every start method makes importable in the worker. Everything else (lambdas, closures, functions
  typed into a REPL or notebook, or defined under ``if __name__ == "__main__":``) travels by value
  with cloudpickle, so it works under every start method too.
* Arguments travel with pickle protocol 5; only where pickle refuses (a lambda inside the
  arguments, say) does cloudpickle take over.
* Results and exceptions come back with plain pickle, as in ``multiprocessing.Pool``: a result
  that cannot be pickled fails its task with ``MaybeEncodingError``.
"""

from __future__ import annotations

import ast
import functools
import io
import pickle
import sys
from collections import ChainMap
from pathlib import Path
from typing import Any, ClassVar

from . import _shm
from ._errors import TaskDecodeError, attach_remote_traceback
from ._protocol import PROTOCOL, decode_exception_parts
from ._shm import Segment, SegmentPool

__all__ = ["decode_exception", "dumps", "dumps_arguments", "dumps_callable", "loads"]

loads = pickle.loads


def dumps_callable(func: Any) -> bytes:
    """Pickle a function so that any worker can call it, whatever the start method."""
    if importable_in_worker(func):
        try:
            return pickle.dumps(func, protocol=PROTOCOL)
        except Exception:
            pass  # not what its name says (redefined, say): fall through to by value
    import cloudpickle

    return cloudpickle.dumps(func, protocol=PROTOCOL)  # type: ignore[no-any-return]


def dumps_for_child(obj: Any) -> bytes:
    """Pickle by value for a child process being started (a ``Process`` target, say).

    The standard library's reducers for pipes, sockets and other handles apply too, so a
    partial or a bound method that carries a queue or a pipe arrives connected.
    """
    buffer = io.BytesIO()
    _child_pickler()(buffer, protocol=PROTOCOL).dump(obj)
    return buffer.getvalue()


@functools.cache
def _child_pickler() -> type[pickle.Pickler]:
    from multiprocessing.reduction import ForkingPickler

    import cloudpickle

    class ChildPickler(cloudpickle.Pickler):  # type: ignore[misc]
        # ForkingPickler keeps the reducers multiprocessing registers (connections, sockets)
        # in this class attribute; a pickler without them sends a bare descriptor number.
        dispatch_table: ClassVar[ChainMap[Any, Any]] = ChainMap(
            ForkingPickler._extra_reducers,  # type: ignore[attr-defined]
            cloudpickle.Pickler.dispatch_table,
        )

    return ChildPickler


def importable_in_worker(func: Any) -> bool:
    """Whether a worker resolves ``func`` by name (so it may travel by reference)."""
    module = getattr(func, "__module__", None)
    if module == "__main__":
        return getattr(func, "__qualname__", None) in _main_script_top_level_names()
    return module is not None


@functools.cache
def _main_script_top_level_names() -> frozenset[str]:
    """Functions and classes a ``__main__`` script defines unconditionally at its top level.

    Workers import the main script as ``__mp_main__`` (spawn and forkserver) or inherit it (fork),
    so exactly these names resolve there; a name defined inside ``if __name__ == "__main__":``
    does not, and neither does anything typed into a REPL (no script at all).
    """
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path:
        return frozenset()
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return frozenset()
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return frozenset(node.name for node in tree.body if isinstance(node, definitions))


def dumps(obj: Any) -> bytes:
    """Pickle a value in band: plain pickle, or cloudpickle for what plain pickle refuses."""
    return dumps_arguments(obj, None)[0]


def dumps_arguments(obj: Any, segments: SegmentPool | None) -> tuple[bytes, list[Segment]]:
    """Pickle task arguments, their large buffers into ``segments`` (shared memory): plain
    pickle, or cloudpickle for what plain pickle refuses."""
    try:
        return _shm.dumps(obj, segments)
    except (pickle.PicklingError, AttributeError, TypeError):
        # Lambdas, closures and local classes inside the arguments: pickle them by value.
        import cloudpickle

        return _shm.dumps(obj, segments, cloudpickle.dumps)


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
    return attach_remote_traceback(exc, tb_text) if tb_text else exc
