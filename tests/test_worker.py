"""A worker's loop run in a thread of this process, against socket pairs: the order of what it
reports, which the scheduler relies on."""

from __future__ import annotations

import errno
import os
import pickle
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import _worker_tasks
from procpool import _worker
from procpool._channel import Channel, Frame
from procpool._protocol import (
    DONE,
    READY,
    RECALL,
    RECALLED,
    STOP,
    TASKS,
    CallMarker,
    Mode,
    RaisedItem,
    WireTask,
    encode_exception,
    pack_ids,
    pack_tasks,
    unpack_done,
    unpack_ids,
)


class Harness:
    """The scheduler's ends of a worker's two channels, the worker serving in a thread."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        control, their_control = socket.socketpair()
        self.channel = Channel(ours, blocking=True)
        self.control = Channel(control, blocking=True)
        self.their_ends = (Channel(theirs, blocking=True), Channel(their_control, blocking=True))
        self.worker = _worker._Worker(*self.their_ends, _worker._Memory(False))
        self.thread = threading.Thread(target=self.worker.serve, daemon=True)
        self.thread.start()
        self.frames: list[Frame] = []
        ready = self.next()
        assert ready.kind == READY
        # The worker's call marker: which item of which task it is calling.
        assert len(ready.fds) == 1
        self.marker = CallMarker(ready.fds[0])
        os.close(ready.fds[0])

    def next(self) -> Frame:
        while not self.frames:
            self.frames = self.channel.receive()
        return self.frames.pop(0)

    def close(self) -> None:
        self.channel.send(STOP)
        self.thread.join(30)
        assert not self.thread.is_alive()
        self.channel.close()
        self.control.close()  # the worker's control thread reads its end and exits
        for end in self.their_ends:
            end.close()
        self.marker.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    for event in (
        _worker_tasks.GATE,
        _worker_tasks.FIRST_STARTED,
        _worker_tasks.LATER_STARTED,
    ):
        event.clear()
    h = Harness()
    yield h
    _worker_tasks.GATE.set()
    h.close()


def task(task_id: int, function: Any, item: int) -> WireTask:
    return WireTask(task_id, Mode.APPLY, pickle.dumps(function), pickle.dumps(((item,), {})))


@pytest.mark.timeout(30)
def test_a_recall_is_answered_before_a_later_task_can_report(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Task 1 runs, 2 and 3 wait behind it; 2 is recalled. Task 3 must not report before the
    answer that gives 2 back: the scheduler expects reports in the order it sent the tasks."""
    send = harness.worker._send

    def answer_once_task_1_is_free(kind: int, parts: Any = None, fds: Any = ()) -> None:
        if kind == RECALLED:
            # Task 1 may now end; the worker must not start task 3 before this answer is out
            # (were it free to, it would start within this bounded wait).
            _worker_tasks.GATE.set()
            assert not _worker_tasks.LATER_STARTED.wait(0.5)
        send(kind, parts, fds)

    monkeypatch.setattr(harness.worker, "_send", answer_once_task_1_is_free)
    harness.channel.send(
        TASKS,
        [
            pack_tasks(
                [
                    task(1, _worker_tasks.wait_for_gate, 10),
                    task(2, abs, -20),
                    task(3, _worker_tasks.note_start, 30),
                ]
            )
        ],
    )
    assert _worker_tasks.FIRST_STARTED.wait(10)  # 2 and 3 are queued behind it
    harness.control.send(RECALL, [pack_ids([2])])
    order = []
    while len(order) < 3:
        frame = harness.next()
        if frame.kind == DONE:
            order.append(("done", unpack_done(frame.body).task_id))
        elif frame.kind == RECALLED:
            order.append(("recalled", tuple(unpack_ids(frame.body))))
    assert order == [("done", 1), ("recalled", (2,)), ("done", 3)]


@pytest.mark.timeout(30)
def test_a_task_whose_items_fail_alone_marks_each_item_and_skips_fallen_ones(
    harness: Harness,
) -> None:
    """The scheduler reads the marker after a worker's death to fail only the item that killed
    it; a fallen item (one that killed a worker before) is not called again: its exception
    stands in its place."""
    fallen = encode_exception(ValueError("killed a worker"), with_traceback=False)
    harness.channel.send(
        TASKS,
        [
            pack_tasks(
                [
                    WireTask(
                        7,
                        Mode.MAP,
                        pickle.dumps(_worker_tasks.wait_at_two),
                        pickle.dumps([0, 1, 2, 3, 4]),
                        return_exceptions=True,
                        fallen=((1, fallen),),
                    )
                ]
            )
        ],
    )
    assert _worker_tasks.FIRST_STARTED.wait(10)
    assert harness.marker.read() == (7, 2)  # calling item 2 now
    _worker_tasks.GATE.set()
    frame = harness.next()
    assert frame.kind == DONE
    done = unpack_done(frame.body)
    assert done.task_id == 7
    results = pickle.loads(done.payload)
    assert [r if not isinstance(r, RaisedItem) else r.payload for r in results] == [
        0,
        fallen,
        2,
        3,
        4,
    ]
    assert harness.marker.read() == (7, 5)  # past the last item: none of them is running


def test_no_marker_when_the_system_refuses_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that cannot make its marker (no descriptor left) serves without one: its
    death then fails the whole task it was running."""

    def refuse(*_: object) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "memfd_create", refuse)
    assert CallMarker.create() is None
