"""``procpool.popen_spawn_win32``: the standard library's own
``multiprocessing.popen_spawn_win32``.

See ``procpool._alias`` for how and why.
"""

from typing import TYPE_CHECKING

from ._alias import alias

if TYPE_CHECKING:
    from multiprocessing.popen_spawn_win32 import *  # noqa: F403  (what type checkers see)

alias(__name__, "multiprocessing.popen_spawn_win32")
