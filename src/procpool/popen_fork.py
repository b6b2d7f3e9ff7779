"""``procpool.popen_fork``: the standard library's ``multiprocessing.popen_fork`` itself.

See ``procpool._alias`` for how and why.
"""

from typing import TYPE_CHECKING

from ._alias import alias

if TYPE_CHECKING:
    from multiprocessing.popen_fork import *  # noqa: F403  (what type checkers see)

alias(__name__, "multiprocessing.popen_fork")
