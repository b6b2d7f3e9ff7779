"""``procpool.heap``: the standard library's ``multiprocessing.heap`` itself.

See ``procpool._alias`` for how and why.
"""

from typing import TYPE_CHECKING

from ._alias import alias

if TYPE_CHECKING:
    from multiprocessing.heap import *  # noqa: F403  (what type checkers see)

alias(__name__, "multiprocessing.heap")
