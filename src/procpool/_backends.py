"""Choosing and building a Pool's backend: local worker processes, or a Dask cluster.

The facade names a backend (``Pool(backend=...)``, or implicitly by passing a Dask ``address``
or ``client``) and gets it from :func:`make_backend`; the Dask backend's module, and Dask
itself, are imported only when a Dask backend is asked for.
"""

from __future__ import annotations

from typing import Any

from ._backend import Backend
from ._shm import SegmentPool

__all__ = ["BACKENDS", "make_backend"]

BACKENDS = ("process", "dask")

_INSTALL_DASK = "pip install 'procpool[dask]'"


def make_backend(
    name: str | None,
    address: str | None,
    client: Any,
    *,
    context: Any,
    processes: int | None,
    maxtasksperchild: int | None,
    initializer: tuple[bytes, tuple[Any, ...]] | None,
    max_memory_per_child: int | None,
) -> tuple[Backend, SegmentPool | None, int]:
    """The backend, the shared-memory segments the facade pickles large arguments into (None:
    arguments travel in band) and the pool's size (the workers, or the cluster's threads).

    ``processes`` None means the default size; ``context`` None, the default context. Options a
    backend cannot honour raise here, at the Pool's construction.
    """
    if name is None:
        name = "dask" if address is not None or client is not None else "process"
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, not {name!r}")
    if name == "process":
        if address is not None or client is not None:
            raise ValueError("address and client name a Dask cluster: they need backend='dask'")
        return _process_backend(
            context, processes, maxtasksperchild, initializer, max_memory_per_child
        )
    _check_dask_options(address, client, context, processes, maxtasksperchild)
    if max_memory_per_child is not None:
        raise ValueError(
            "max_memory_per_child cannot be honoured on Dask: a Dask worker's memory is capped "
            "where the cluster is deployed (`dask worker --memory-limit`, or LocalCluster's "
            "memory_limit); Dask's nanny then restarts a worker that grows past 95% of it, and "
            "procpool fails the task it was running with WorkerLostError"
        )
    try:
        from ._dask import DaskBackend
    except ImportError as exc:
        raise ImportError(
            f"Pool(backend='dask') needs Dask's distributed scheduler: {_INSTALL_DASK}"
        ) from exc
    backend = DaskBackend(
        client=client, address=address, processes=processes, initializer=initializer
    )
    return backend, None, backend.size


def _process_backend(
    context: Any,
    processes: int | None,
    maxtasksperchild: int | None,
    initializer: tuple[bytes, tuple[Any, ...]] | None,
    max_memory_per_child: int | None,
) -> tuple[Backend, SegmentPool | None, int]:
    from ._context import get_context
    from ._cpu import cpu_count
    from ._scheduler import ProcessBackend

    size = cpu_count() if processes is None else processes
    # Large buffers of the arguments are copied into these shared-memory segments.
    segments = SegmentPool()
    backend = ProcessBackend(
        context if context is not None else get_context(),
        size,
        maxtasksperchild,
        initializer,
        max_memory_per_child,
        segments=segments,
    )
    return backend, segments, size


def _check_dask_options(
    address: str | None,
    client: Any,
    context: Any,
    processes: int | None,
    maxtasksperchild: int | None,
) -> None:
    """Refuse, with the reason, what a Dask backend cannot honour."""
    if address is not None and client is not None:
        raise ValueError("give a Dask scheduler's address or a client, not both")
    if processes is not None and (address is not None or client is not None):
        raise ValueError(
            "processes cannot be honoured on an existing Dask cluster: its size is set where it "
            "is deployed (leave processes out: the pool's size is then the cluster's threads)"
        )
    if context is not None:
        raise ValueError(
            "a multiprocessing context has no meaning on Dask: its workers are started by the "
            "cluster's deployment"
        )
    if maxtasksperchild is not None:
        raise ValueError(
            "maxtasksperchild cannot be honoured on Dask, which replaces workers by age, not by "
            "task count: set `dask worker --lifetime` (with --lifetime-restart) where the "
            "cluster is deployed"
        )
