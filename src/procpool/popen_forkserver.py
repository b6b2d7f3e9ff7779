"""``procpool.popen_forkserver``: the standard library's own
``multiprocessing.popen_forkserver``.

See ``procpool._alias`` for how and why.
"""

from typing import TYPE_CHECKING

from ._alias import alias

if TYPE_CHECKING:
    from multiprocessing.popen_forkserver import *  # noqa: F403  (what type checkers see)

alias(__name__, "multiprocessing.popen_forkserver")
