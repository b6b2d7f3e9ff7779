"""Choosing and building a Pool's backend: local worker processes, or a Dask cluster.

The facade names a backend (``Pool(backend=...)``, or implicitly by passing a Dask ``address``
or ``client``) and gets it from :func:`make_backend`; the Dask backend's module, and Dask
itself, are imported only when a Dask backend is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ._backend import Backend
from ._context import get_context
from ._cpu import cpu_count
from ._feeding import TARGET_CHUNK_SECONDS
from ._protocol import ITEMS_MARKED, PROTOCOL

# The local backend is the default: loaded with the facade, not in the first Pool() call.
from ._scheduler import ProcessBackend
from ._serialize import dumps_callable
from ._shm import SegmentPool

__all__ = ["BACKENDS", "Built", "Settings", "make_backend"]

BACKENDS = ("process", "dask")

_INSTALL_DASK = "pip install 'procpool[dask]'"

Initializer = tuple[Callable[..., object], tuple[Any, ...]]

# Work an automatic map chunk should stand for on Dask: a Dask task costs the scheduler about a
# millisecond at best (several on a busy machine), a local task a few microseconds.
DASK_CHUNK_SECONDS = 0.05


class Built(NamedTuple):
    """A backend, and what the facade needs to know to feed it."""

    backend: Backend
    segments: SegmentPool | None  # where large arguments go (None: they travel in band)
    size: int  # the workers, or the cluster's threads: sizes map chunks and imap windows
    dumps_callable: Callable[[Any], bytes]  # pickles the functions the backend's workers call
    chunk_seconds: float = TARGET_CHUNK_SECONDS  # work an automatic map chunk stands for
    # A lost worker fails only the item it was calling, in a chunk whose items fail alone
    # (else the whole chunk): one-item imap chunks may then travel several to a task.
    items_marked: bool = False


def dumps_for_cluster(func: Any) -> bytes:
    """Pickle a function for a cluster's workers. Their main module is not the caller's, so a
    function of the caller's ``__main__`` travels by value; others as for local workers."""
    if getattr(func, "__module__", None) == "__main__":
        import cloudpickle

        return cloudpickle.dumps(func, protocol=PROTOCOL)  # type: ignore[no-any-return]
    return dumps_callable(func)


class Settings(NamedTuple):
    """The Pool's options that shape its backend."""

    context: Any  # None: the default context
    processes: int | None  # None: the default size
    maxtasksperchild: int | None
    initializer: Initializer | None  # the function and its arguments
    max_memory_per_child: int | None


def make_backend(
    name: str | None,
    address: str | None,
    client: Any,
    *,
    context: Any,
    processes: int | None,
    maxtasksperchild: int | None,
    initializer: Initializer | None,
    max_memory_per_child: int | None,
) -> Built:
    """The backend named (``name`` None: Dask if ``address`` or ``client`` is given), built
    with the Pool's :class:`Settings`. Options a backend cannot honour raise here, at the
    Pool's construction."""
    settings = Settings(context, processes, maxtasksperchild, initializer, max_memory_per_child)
    if name is None:
        name = "dask" if address is not None or client is not None else "process"
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, not {name!r}")
    if name == "dask":
        return _dask_backend(address, client, settings)
    if address is not None or client is not None:
        raise ValueError("address and client name a Dask cluster: they need backend='dask'")
    return _process_backend(settings)


def _process_backend(settings: Settings) -> Built:
    size = cpu_count() if settings.processes is None else settings.processes
    # The arguments travel with the worker's start (a fork inherits them), as in the standard
    # library, so they may hold queues, locks and shared values.
    initializer = settings.initializer
    init = None if initializer is None else (dumps_callable(initializer[0]), initializer[1])
    # Large buffers of the arguments are copied into these shared-memory segments; two for each
    # worker keep them all busy (one task running, the next on its way) while others are reused.
    segments = SegmentPool(depth=2 * size)
    backend = ProcessBackend(
        settings.context if settings.context is not None else get_context(),
        size,
        settings.maxtasksperchild,
        init,
        settings.max_memory_per_child,
        segments=segments,
    )
    return Built(backend, segments, size, dumps_callable, items_marked=ITEMS_MARKED)


def _dask_backend(address: str | None, client: Any, settings: Settings) -> Built:
    _check_dask_options(address, client, settings)
    try:
        from ._dask import DaskBackend
    except ImportError as exc:
        raise ImportError(
            f"Pool(backend='dask') needs Dask's distributed scheduler: {_INSTALL_DASK}"
        ) from exc
    initializer = settings.initializer
    init = None if initializer is None else (dumps_for_cluster(initializer[0]), initializer[1])
    backend = DaskBackend(
        client=client, address=address, processes=settings.processes, initializer=init
    )
    return Built(backend, None, backend.size, dumps_for_cluster, DASK_CHUNK_SECONDS)


def _check_dask_options(address: str | None, client: Any, settings: Settings) -> None:
    """Refuse, with the reason, what a Dask backend cannot honour."""
    if address is not None and client is not None:
        raise ValueError("give a Dask scheduler's address or a client, not both")
    if settings.processes is not None and (address is not None or client is not None):
        raise ValueError(
            "processes cannot be honoured on an existing Dask cluster: its size is set where it "
            "is deployed (leave processes out: the pool's size is then the cluster's threads)"
        )
    if settings.context is not None:
        raise ValueError(
            "a multiprocessing context has no meaning on Dask: its workers are started by the "
            "cluster's deployment"
        )
    if settings.maxtasksperchild is not None:
        raise ValueError(
            "maxtasksperchild cannot be honoured on Dask, which replaces workers by age, not by "
            "task count: set `dask worker --lifetime` (with --lifetime-restart) where the "
            "cluster is deployed"
        )
    if settings.max_memory_per_child is not None:
        raise ValueError(
            "max_memory_per_child cannot be honoured on Dask: a Dask worker's memory is capped "
            "where the cluster is deployed (`dask worker --memory-limit`, or LocalCluster's "
            "memory_limit); Dask's nanny then restarts a worker that grows past 95% of it, and "
            "procpool fails the task it was running with WorkerLostError"
        )
