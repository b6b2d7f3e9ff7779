"""procpool's current default start method.

Like the standard library's, it is set at most once unless forced, and it is procpool's own:
``procpool.set_start_method`` never changes ``multiprocessing``'s, nor the other way round.
"""

from __future__ import annotations

import multiprocessing

__all__ = ["default_method", "get_start_method", "platform_default", "set_start_method"]


class _StartMethod:
    def __init__(self) -> None:
        self.method: str | None = None


_current = _StartMethod()


def platform_default() -> str:
    """``forkserver`` where the platform has it (safe with the pool's threads), else ``spawn``."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def default_method() -> str:
    """The start method new pools and processes use (``forkserver`` on Linux unless set)."""
    return _current.method or platform_default()


def get_start_method(allow_none: bool = False) -> str | None:
    """The current default start method; None if never set and ``allow_none`` is true."""
    if allow_none:
        return _current.method
    return default_method()


def set_start_method(method: str | None, force: bool = False) -> None:
    """Choose the default start method for procpool's pools and processes.

    As in the standard library, a second call raises ``RuntimeError`` unless ``force`` is true.
    """
    if _current.method is not None and not force:
        raise RuntimeError("context has already been set")
    if method is not None and method not in multiprocessing.get_all_start_methods():
        raise ValueError(f"cannot find context for {method!r}")
    _current.method = method
