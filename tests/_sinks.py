"""A result sink the task-core tests read back: it records every outcome it is sent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from procpool._protocol import Status
from procpool._shm import Lent


@dataclass(frozen=True)
class Delivered:
    """What ``_deliver`` was given (the payload copied out of its view)."""

    status: Status
    payload: bytes
    attempts: tuple[str, ...]
    lent: Lent | None = None


class RecordingSink:
    """Stands in for a result object: keeps every ``_deliver`` and ``_fail`` call, in order,
    so that a test can check that each task ended exactly once and how."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, Delivered | BaseException]] = []

    def _deliver(
        self,
        index: int,
        status: Status,
        payload: memoryview,
        attempts: Sequence[str] = (),
        lent: Lent | None = None,
    ) -> None:
        self.calls.append((index, Delivered(status, bytes(payload), tuple(attempts), lent)))

    def _fail(self, index: int, exc: BaseException) -> None:
        self.calls.append((index, exc))

    def ended(self) -> dict[int, Delivered | BaseException]:
        """Each task's one outcome, by index; fails if any task was sent two."""
        twice = [index for index, count in Counter(i for i, _ in self.calls).items() if count > 1]
        assert not twice, f"tasks {twice} ended more than once: {self.calls}"
        return dict(self.calls)

    def outcome(self, index: int = 0) -> Delivered | BaseException:
        """The one outcome of the task at ``index``; fails if it has none or several."""
        ended = self.ended()
        assert index in ended, f"task {index} has not ended: {self.calls}"
        return ended[index]

    def error(self, index: int = 0) -> BaseException:
        """The error the task at ``index`` failed with; fails if it was delivered instead."""
        outcome = self.outcome(index)
        assert isinstance(outcome, BaseException), f"task {index} was delivered: {outcome}"
        return outcome

    def delivered(self, index: int = 0) -> Delivered:
        """What was delivered for the task at ``index``; fails if it failed instead."""
        outcome = self.outcome(index)
        assert isinstance(outcome, Delivered), f"task {index} failed: {outcome!r}"
        return outcome
