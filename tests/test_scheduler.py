"""The scheduler carries out the policy's actions in the order the policy decided them."""

from __future__ import annotations

from collections import deque

import pytest

from procpool._policy import Action, FailReason, Lost, Send, Spawn, TaskInfo
from procpool._scheduler import ProcessBackend


class _Recorder(ProcessBackend):
    """A scheduler with no processes: it records the actions it carries out. A lost task is
    queued again at once, as the task core decides for a task with retries or fallen items,
    and the policy then sends it to the surviving worker."""

    def __init__(self) -> None:  # no workers, no thread: only what _execute uses
        self._deferred: deque[Action] = deque()
        self._executing = False
        self.done: list[Action] = []

    def _carry_out(self, action: Action) -> None:
        self.done.append(action)
        if isinstance(action, Lost):
            self._execute([Send(0, (action.task.task_id,))])


@pytest.mark.timeout(10)
def test_actions_decided_while_carrying_others_out_come_after_them() -> None:
    """Worker 1 died running task 12; the policy sent pending task 13 to worker 0 in the same
    decision. Task 12, queued again while that decision is carried out, must reach worker 0
    after 13: the scheduler takes worker 0's reports in the order the policy sent its tasks,
    and a report out of that order would be dropped (the pool then hung)."""
    scheduler = _Recorder()
    lost = Lost(TaskInfo(12), FailReason.WORKER_LOST, 1)
    scheduler._execute([lost, Spawn(2), Send(0, (13,))])
    assert scheduler.done == [lost, Spawn(2), Send(0, (13,)), Send(0, (12,))]
    # Carried out, the queue is empty for the next decision.
    scheduler._execute([Send(0, (14,))])
    assert scheduler.done[-1] == Send(0, (14,))
    assert not scheduler._executing
