"""``procpool.spawn``: the standard library's ``multiprocessing.spawn`` itself.

See ``procpool._alias`` for how and why.
"""

from typing import TYPE_CHECKING

from ._alias import alias

if TYPE_CHECKING:
    from multiprocessing.spawn import *  # noqa: F403  (what type checkers see)

alias(__name__, "multiprocessing.spawn")
