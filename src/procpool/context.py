"""``procpool.context``: the names of ``multiprocessing.context``, with procpool's contexts.

:class:`Context` (what ``procpool.get_context(method)`` returns) gives procpool's ``Pool``,
``Process`` and ``Manager`` and the standard library's primitives for one start method. Every
other name (``BaseContext``, ``ForkContext``, ``assert_spawning``, ``reduction``...) is the
standard library's own object.
"""

from __future__ import annotations

from multiprocessing import context as _std

from ._alias import fallback
from ._context import Context, get_all_start_methods, get_context

__all__ = ["Context", "get_all_start_methods", "get_context"]

__getattr__ = fallback(_std, globals())
