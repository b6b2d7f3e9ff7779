"""``procpool.pool``: the names of ``multiprocessing.pool``, for code that imports from there.

``MaybeEncodingError`` and ``RemoteTraceback`` are the standard library's own classes, so
``except multiprocessing.pool.MaybeEncodingError`` clauses catch procpool's errors too. Every
other name of ``multiprocessing.pool`` (``worker``, ``mapstar``, ``ExceptionWithTraceback``...) is
the standard library's own object.
"""

import multiprocessing.pool as _std
from multiprocessing.pool import ThreadPool

from ._alias import fallback
from ._errors import MaybeEncodingError, RemoteTraceback
from ._policy import Lifecycle
from ._pool import Pool
from ._results import ApplyResult, AsyncResult, IMapIterator, IMapUnorderedIterator, MapResult

__all__ = [
    "CLOSE",
    "RUN",
    "TERMINATE",
    "ApplyResult",
    "AsyncResult",
    "IMapIterator",
    "IMapUnorderedIterator",
    "MapResult",
    "MaybeEncodingError",
    "Pool",
    "RemoteTraceback",
    "ThreadPool",
]

RUN = Lifecycle.RUN
CLOSE = Lifecycle.CLOSE
TERMINATE = Lifecycle.TERMINATE

__getattr__ = fallback(_std, globals())
