"""``procpool.shared_memory``: the standard library's ``multiprocessing.shared_memory`` itself.

See ``procpool._alias`` for how and why.
"""

from typing import TYPE_CHECKING

from ._alias import alias

if TYPE_CHECKING:
    from multiprocessing.shared_memory import *  # noqa: F403  (what type checkers see)

alias(__name__, "multiprocessing.shared_memory")
