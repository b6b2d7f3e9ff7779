"""The loop a worker process runs: take tasks from its queue, run each, report each outcome.

A worker has two channels from the scheduler. The main thread reads tasks from the data channel
itself whenever its queue is empty (no thread hand-off on the way to a task), runs the queued
tasks in order and sends one DONE frame per task as soon as it ends, so a worker that dies
mid-queue has reported all it completed. A control thread blocks on the control channel: it
gives back the queued tasks the scheduler recalls, even while a long task runs (so an idle
worker can take work queued behind it here), and frees result segments the parent has let go
of. Both threads send on the data channel, one frame at a time.

Workers import little (the standard library and procpool's wire modules), so they start fast.
A worker exits when the scheduler says STOP and its queue is empty, when its channel closes, or
at once when the parent process dies: a watchdog thread blocks on a lifeline pipe whose only
writer is the parent.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import threading
import time
from collections import deque
from itertools import starmap
from multiprocessing.connection import Connection
from typing import Any

from . import _shm
from ._channel import Channel, Frame
from ._protocol import (
    DONE,
    FORGET,
    INIT_FAILED,
    READY,
    RECALL,
    RECALLED,
    RELEASE,
    STOP,
    TASKS,
    CallMarker,
    Mode,
    RaisedItem,
    Status,
    WireTask,
    done_header,
    encode_exception,
    encoding_error,
    pack_ids,
    unpack_ids,
    unpack_tasks,
)
from ._shm import Lent, Segment, SegmentMaps, SegmentPool, SegmentRef

# Exit status of a worker whose parent died: nobody is left to read it, but a core dump or a
# process accounting record then says why.
_ORPHANED = 70

# How often a worker samples its memory when nobody caps it (seconds), and the unit it counts in.
_SAMPLE_INTERVAL = 0.5
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

# The parent is the only receiver of a worker's result segments.
_PARENT = 0
# Result segments the parent may hold at once before the oldest are disowned (closed here; the
# parent's mapping keeps its pages for as long as the result lives).
_MAX_LENT = 64


def worker_main(
    sock: socket.socket,
    control: socket.socket,
    lifeline: Connection,
    inherited_fds: tuple[int, ...],
    init: tuple[bytes, tuple[Any, ...]] | None,
    measure_every_task: bool = False,
) -> None:
    """Entry point of a worker process (the ``target`` of its ``Process``).

    ``inherited_fds`` are the parent's ends of other channels that a forked child inherits; closing
    them lets the lifeline and those channels report EOF when their real owner goes away.
    ``measure_every_task``: report resident memory after every task (the pool caps it).
    """
    for fd in inherited_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    # Ctrl-C in a terminal reaches the whole process group: the parent handles it and stops the
    # workers, so a worker must not die of it mid-task or print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(lifeline,), daemon=True).start()
    channel = Channel(sock, blocking=True)
    if init is not None and not _run_initializer(channel, init):
        return
    _Worker(channel, Channel(control, blocking=True), _Memory(measure_every_task)).serve()


def _exit_when_orphaned(lifeline: Connection) -> None:
    try:
        lifeline.recv_bytes()
    except (EOFError, OSError):
        pass
    os._exit(_ORPHANED)


def _run_initializer(channel: Channel, init: tuple[bytes, tuple[Any, ...]]) -> bool:
    function, initargs = init
    try:
        pickle.loads(function)(*initargs)
    except BaseException as exc:
        channel.send(INIT_FAILED, [encode_exception(exc)])
        return False
    return True


class _Worker:
    """The worker's state: its queue of tasks and its shared-memory segments."""

    def __init__(self, channel: Channel, control: Channel, memory: _Memory) -> None:
        self._channel = channel
        self._control = control
        self._memory = memory
        self._send_lock = threading.Lock()
        # Held by whichever thread reads the data channel: the main thread, blocked there while
        # its queue is empty, or the control thread pulling in tasks before a recall.
        self._read_lock = threading.Lock()
        self._lock = threading.Lock()  # guards the queue and the stopping flag
        self._queue: deque[tuple[WireTask, Lent | BaseException | None]] = deque()
        self._stopping = False  # STOP arrived: run what is queued, then exit
        self._arguments = SegmentMaps()
        self._results = SegmentPool()
        self._functions = _FunctionCache()
        self._last_function = b""  # the function blob of the task queued last
        self._marker: CallMarker | None = None  # which item is being called (see _call_each)

    def serve(self) -> None:
        created = CallMarker.create()
        if created is None:
            self._send(READY)
        else:
            self._marker, fd = created
            self._send(READY, fds=[fd])
            os.close(fd)
        threading.Thread(target=self._serve_control, name="procpool-control", daemon=True).start()
        while True:
            with self._lock:
                item = self._queue.popleft() if self._queue else None
                if item is None and self._stopping:
                    return
            if item is not None:
                self._run_and_report(*item)
                continue
            with self._read_lock:
                if self._queue:
                    continue  # the control thread pulled tasks in meanwhile
                try:
                    frames = self._channel.receive()
                except (EOFError, OSError):
                    return  # the scheduler has gone: nothing left to do
                self._on_frames(frames)

    def _send(
        self, kind: int, parts: list[bytes | memoryview] | None = None, fds: Any = ()
    ) -> None:
        with self._send_lock:
            self._channel.send(kind, parts or (), fds)

    def _on_frames(self, frames: list[Frame]) -> None:
        """Data-channel frames (read under the read lock): tasks to queue, or STOP."""
        for frame in frames:
            if frame.kind == TASKS:
                self._queue_tasks(unpack_tasks(frame.body), frame.fds)
            elif frame.kind == STOP:
                with self._lock:
                    self._stopping = True

    # -- the control thread -------------------------------------------------------------------

    def _serve_control(self) -> None:
        try:
            while True:
                for frame in self._control.receive():
                    self._on_control(frame)
        except (EOFError, OSError):
            pass

    def _on_control(self, frame: Frame) -> None:
        if frame.kind == RECALL:
            self._give_back(set(unpack_ids(frame.body)))
        elif frame.kind == RELEASE:
            closed = self._results.give_back(unpack_ids(frame.body), reusable=True)
            if closed:
                self._send(FORGET, [pack_ids([s.sid for s in closed])])
        elif frame.kind == FORGET:
            self._arguments.forget(unpack_ids(frame.body))

    def _queue_tasks(self, tasks: list[WireTask], fds: list[int]) -> None:
        queued: list[tuple[WireTask, Lent | BaseException | None]] = []
        for task in tasks:
            # An empty function means "the one before it": resolved here, in the order the
            # scheduler sent them, since a recall may take back the task that carried it.
            if task.function:
                self._last_function = task.function
            else:
                task = task._replace(function=self._last_function)
            lent: Lent | BaseException | None = None
            if task.segments:
                count = sum(ref.has_fd for ref in task.segments)
                mine, fds = fds[:count], fds[count:]
                try:
                    lent = self._arguments.views(task.segments, mine)
                except Exception as exc:
                    lent = exc  # the task reports it as undecodable
            queued.append((task, lent))
        with self._lock:
            self._queue.extend(queued)

    def _give_back(self, ids: set[int]) -> None:
        """Give back the recalled tasks not started. Tasks still in the data channel are pulled
        in first, unless the main thread is reading it (its queue is then empty: whatever it
        reads, it runs)."""
        if self._read_lock.acquire(blocking=False):
            try:
                self._on_frames(self._channel.receive(wait=False))
            except (EOFError, OSError):
                pass  # the main thread sees the end on its next read
            finally:
                self._read_lock.release()
        with self._lock:
            kept = deque(item for item in self._queue if item[0].task_id not in ids)
            recalled = [item for item in self._queue if item[0].task_id in ids]
            self._queue = kept
            # Said before the queue is let go of: a task queued behind the recalled ones must
            # not start, and report, before the scheduler knows they are back (it expects the
            # reports in the order it sent the tasks, and would not take that one).
            self._send(RECALLED, [pack_ids([task.task_id for task, _ in recalled])])

    # -- the main thread ----------------------------------------------------------------------

    def _run_and_report(self, task: WireTask, lent: Lent | BaseException | None) -> None:
        status, payload, segments, elapsed = self._run(task, lent)
        released = True
        if isinstance(lent, Lent) and not lent.try_release():
            # The task kept a view of its arguments (in a global, say): those pages stay
            # its own, and the parent must never write into them again.
            self._arguments.forget(lent.sids)
            released = False
        refs = []
        fds = []
        for segment in segments:
            has_fd = _PARENT not in segment.mapped_by
            segment.mapped_by.add(_PARENT)
            refs.append(SegmentRef(segment.sid, segment.length, has_fd))
            if has_fd:
                fds.append(segment.fd)
        resident = self._memory.sample()
        header = done_header(task.task_id, status, resident, elapsed, released, tuple(refs))
        self._send(DONE, [header, payload], fds)
        if segments:
            disowned = self._results.trim_lent(_MAX_LENT)
            if disowned:
                self._send(FORGET, [pack_ids([s.sid for s in disowned])])

    def _run(
        self, task: WireTask, lent: Lent | BaseException | None
    ) -> tuple[Status, bytes, list[Segment], float]:
        """Run the task: its status, pickled outcome, result segments and the seconds it took
        from its arguments to its pickled result (a function's first loading in this worker,
        a cost paid once, is left out: the time sizes the chunks of its next tasks)."""
        started = time.perf_counter()
        try:
            if isinstance(lent, BaseException):
                raise lent
            function = self._functions.get(task.function)
            started = time.perf_counter()
            arguments = _shm.loads(task.arguments, lent)
            retry_on = pickle.loads(task.retry_on) if task.retry_on else ()
        except BaseException as exc:
            return Status.UNDECODABLE, encode_exception(exc), [], time.perf_counter() - started
        try:
            if task.return_exceptions:
                result = _call_each(task, function, arguments, retry_on, self._marker)
            else:
                result = _call(task.mode, function, arguments)
        except BaseException as exc:
            status = Status.RETRY if isinstance(exc, retry_on) else Status.ERROR
            return status, encode_exception(exc), [], time.perf_counter() - started
        del arguments
        try:
            payload, segments = _shm.dumps(result, self._results)
        except Exception as exc:
            error = encode_exception(encoding_error(exc, result))
            return Status.ERROR, error, [], time.perf_counter() - started
        elapsed = time.perf_counter() - started
        if task.return_exceptions and any(
            isinstance(r, RaisedItem) and r.retryable for r in result
        ):
            return Status.RETRY, payload, segments, elapsed
        return Status.OK, payload, segments, elapsed


class _Memory:
    """Samples this process's resident memory for the scheduler: after every task when the pool
    caps memory per worker, else at most twice a second (to name the figure should the worker be
    killed, by the out-of-memory killer say)."""

    def __init__(self, every_task: bool) -> None:
        try:
            self._fd: int | None = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._fd = None  # not Linux: no figure
        self._every_task = every_task
        self._next = 0.0

    def sample(self) -> int:
        """Resident bytes now, or 0 when not measured this time."""
        if self._fd is None:
            return 0
        if not self._every_task:
            now = time.monotonic()
            if now < self._next:
                return 0
            self._next = now + _SAMPLE_INTERVAL
        return int(os.pread(self._fd, 128, 0).split()[1]) * _PAGE_SIZE


class _FunctionCache:
    """Keeps the last function unpickled: a map sends the same function with every chunk."""

    def __init__(self) -> None:
        self._blob = b""
        self._function: Any = None

    def get(self, blob: bytes) -> Any:
        if blob != self._blob:
            self._function = pickle.loads(blob)
            self._blob = blob
        return self._function


def _call(mode: Mode, function: Any, arguments: Any) -> Any:
    if mode == Mode.APPLY:
        args, kwds = arguments
        return function(*args, **kwds)
    if mode == Mode.MAP:
        return list(map(function, arguments))
    return list(starmap(function, arguments))


def _call_each(
    task: WireTask,
    function: Any,
    arguments: Any,
    retry_on: tuple[type[BaseException], ...],
    marker: CallMarker | None,
) -> list[Any]:
    """Call the function on each item; an item that raises leaves a RaisedItem in its place,
    and so does an item that killed a worker before (``task.fallen``: it is not called again).
    ``marker`` records the item being called, for the scheduler to read should this process
    die in it."""
    results: list[Any] = []
    star = task.mode == Mode.STARMAP
    fallen = dict(task.fallen)
    for position, item in enumerate(arguments):
        if fallen and position in fallen:
            results.append(RaisedItem(fallen[position]))
            continue
        if marker is not None:
            marker.mark(task.task_id, position)
        try:
            results.append(function(*item) if star else function(item))
        except BaseException as exc:
            results.append(RaisedItem(encode_exception(exc), isinstance(exc, retry_on)))
    if marker is not None:
        marker.mark(task.task_id, len(results))  # past the last item: none of them killed it
    return results
