"""``procpool.resource_tracker``: the standard library's own
``multiprocessing.resource_tracker``.

See ``procpool._alias`` for how and why.
"""

from typing import TYPE_CHECKING

from ._alias import alias

if TYPE_CHECKING:
    from multiprocessing.resource_tracker import *  # noqa: F403  (what type checkers see)

alias(__name__, "multiprocessing.resource_tracker")
