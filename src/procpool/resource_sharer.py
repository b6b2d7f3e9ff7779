"""``procpool.resource_sharer``: the standard library's ``multiprocessing.resource_sharer`` itself.

See ``procpool._alias`` for how and why.
"""

from typing import TYPE_CHECKING

from ._alias import alias

if TYPE_CHECKING:
    from multiprocessing.resource_sharer import *  # noqa: F403  (what type checkers see)

alias(__name__, "multiprocessing.resource_sharer")
