"""The standard library's own ``multiprocessing`` submodules, under ``procpool``'s name.

Where procpool adds nothing to a submodule (``connection``, ``queues``, ``synchronize``...),
``procpool.<name>`` is not a copy but ``multiprocessing.<name>`` itself: the tiny module file
``procpool/<name>.py`` replaces itself in ``sys.modules`` with the standard library's module while
it is being imported, and the import system hands out whatever ``sys.modules`` holds once the
file has run. So ``import procpool.connection``, ``from procpool.connection import wait`` and
``procpool.connection is multiprocessing.connection`` all hold, objects keep their standard
``__module__`` (a child process unpickles them from the standard library, with or without
procpool), and ``isinstance`` checks against either name agree. Nothing is imported before it
is asked for.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["alias", "fallback"]


def alias(name: str, target: str) -> ModuleType:
    """Make the module being imported as ``name`` the module ``target`` (and its submodules,
    already imported or not, reachable under ``name`` too, as the same objects)."""
    module = importlib.import_module(target)
    sys.modules[name] = module
    for full, sub in list(sys.modules.items()):
        if full.startswith(target + "."):
            sys.modules[name + full[len(target) :]] = sub
    return module


def fallback(target: ModuleType, own: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for a procpool module that overrides some names of ``target``:
    every name the procpool module does not define is ``target``'s own (PEP 562)."""

    def __getattr__(name: str) -> Any:
        try:
            return getattr(target, name)
        except AttributeError:
            raise AttributeError(f"module {own['__name__']!r} has no attribute {name!r}") from None

    return __getattr__
