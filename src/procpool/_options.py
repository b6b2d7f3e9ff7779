"""Task options: how long a task may run, how often it is retried, how failures come back.

A pool holds defaults (``Pool(task_timeout=..., retries=..., retry_on=...)``); every submitting
method takes the same options as keyword arguments to override them for one call. They are
validated once, here, into an :class:`Options` value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypedDict

from ._progress import ProgressOption

__all__ = ["MapOptions", "Options", "TaskOptions"]

ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


class TaskOptions(TypedDict, total=False):
    """Keyword options every submitting method accepts."""

    timeout: float | None  # seconds a task may run before its worker is killed
    retries: int  # re-runs after a worker loss, a timeout or a ``retry_on`` exception
    retry_on: ExceptionTypes  # exceptions raised by the task that are worth a retry


class MapOptions(TaskOptions, total=False):
    """Keyword options of the map family (``map``, ``imap``, ``starmap``...)."""

    return_exceptions: bool  # a failed item yields its exception in its place
    progress: ProgressOption  # a bar on stderr, or a callable told the items done (_progress)


@dataclasses.dataclass(frozen=True)
class Options:
    """Validated task options."""

    timeout: float | None = None
    retries: int = 0
    retry_on: tuple[type[BaseException], ...] = ()
    return_exceptions: bool = False

    def __post_init__(self) -> None:
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or not self.timeout > 0
        ):
            raise ValueError(f"timeout must be a positive number of seconds, not {self.timeout!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be a non-negative int, not {self.retries!r}")
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on):
            raise TypeError(f"retry_on must be exception types, not {self.retry_on!r}")
        if not isinstance(self.return_exceptions, bool):
            raise TypeError("return_exceptions must be True or False")

    def override(self, given: Mapping[str, Any]) -> Options:
        """These options with the ones given for one call replacing them."""
        if not given:
            return self
        unknown = set(given) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
        changes = dict(given)
        if "retry_on" in changes:
            changes["retry_on"] = exception_types(changes["retry_on"])
        return dataclasses.replace(self, **changes)

    def chunksize_allowed(self, chunksize: int | None) -> int | None:
        """A timeout applies to each call of the function, so each item must be a task of its
        own: the chunk size must then be 1 (None picks 1)."""
        if self.timeout is None:
            return chunksize
        if chunksize not in (None, 1):
            raise ValueError(
                "a task timeout applies to each call, so chunksize must be 1 (or None) with it, "
                f"not {chunksize}"
            )
        return 1


def exception_types(value: ExceptionTypes | None) -> tuple[type[BaseException], ...]:
    """``retry_on`` as a tuple: one exception type, or several."""
    if value is None:
        return ()
    if isinstance(value, type):
        return (value,)
    return tuple(value)
