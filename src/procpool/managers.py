"""``procpool.managers``: the standard library's ``multiprocessing.managers``, except that
:class:`SyncManager`'s ``Pool()`` makes procpool's Pool (in the manager's process).

Every other name is the standard library's own object (``BaseManager``, ``BaseProxy``,
``RemoteError``, ``SharedMemoryManager``...). ``procpool.Manager()`` starts this
``SyncManager``.
"""

from __future__ import annotations

from multiprocessing import managers as _std

from ._alias import fallback
from ._pool import Pool

__all__ = ["SyncManager"]


class SyncManager(_std.SyncManager):
    """The standard library's ``SyncManager`` (queues, locks, dicts, lists, namespaces... shared
    through a server process), whose ``Pool()`` is procpool's."""


# The standard library registers its own Pool with the same proxy; register() copies the
# registry into this class first, so the standard library's SyncManager is left as it is.
SyncManager.register("Pool", Pool, _std.PoolProxy)  # type: ignore[attr-defined]

__getattr__ = fallback(_std, globals())
