"""The local process backend: one scheduler thread that owns every worker and every task.

    caller threads                 scheduler thread                          worker processes
    (Pool facade,    ──post()──▶   inbox + wake pipe                         (one duplex channel
     imap feeders)                 selector.select(timeout=nearest deadline)   and one sentinel
                                     ├─ wake pipe: run the posted calls         each)
                                     ├─ a channel readable: READY / INIT /  ◀──  results
                                     │    DONE / RECALLED / FORGET frames
                                     ├─ a channel writable: send what is queued
                                     └─ a sentinel: the worker died
                                   Policy(events) -> actions:  Spawn, Send ──TASKS/STOP/──▶
                                                               Stop, Kill,    RECALL/RELEASE
                                                               Fail, Recall
    result objects  ◀──_deliver/_fail──┘

Public methods never touch pool state: they post a call into the inbox and, where they must
wait, wait on an event the scheduler sets. The scheduler never polls: it blocks on one selector
over the wake pipe, every worker's channel and every worker's process sentinel, with the
nearest task deadline as its timeout, so a death is seen the moment it happens. Each worker has
its own channel, and every channel is non-blocking on this side: frames are read as their
bytes arrive and written as the socket takes them, so a worker sending a gigabyte, or frozen in
the middle of a frame, never delays the other workers' results, a deadline or a death. Large
buffers travel in shared memory beside the frames (``_shm``): arguments are copied into segments
in the caller's thread, results are mapped and unpickled in the thread that reads them.
"""

from __future__ import annotations

import contextlib
import os
import queue
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing import util
from multiprocessing.connection import Pipe
from multiprocessing.process import BaseProcess
from typing import Any

from ._backend import Measured, PreparedTask, ResultSink, wakes
from ._channel import Channel, Frame
from ._errors import (
    BrokenPoolError,
    InitializerError,
    ProcpoolError,
    TaskTimeoutError,
    WorkerLostError,
    describe_exit,
)
from ._policy import (
    Action,
    Fail,
    FailReason,
    Kill,
    Lifecycle,
    Lost,
    Policy,
    Recall,
    Send,
    Spawn,
    Stop,
    TaskInfo,
)
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
    Status,
    WireTask,
    pack_ids,
    pack_tasks,
    unpack_done,
    unpack_ids,
)
from ._serialize import decode_exception
from ._shm import Lent, Segment, SegmentMaps, SegmentPool, SegmentRef
from ._tasks import ErrorFactory, TaskCore
from ._worker import worker_main
from ._zygote import burst as zygote_burst

__all__ = ["ProcessBackend"]

# epoll waits at most 2**31 ms: a farther deadline is waited for in steps of a day.
_LONGEST_WAIT = 86400.0

# Frames that travel on a worker's control channel.
_CONTROL = frozenset((RECALL, RELEASE, FORGET))

# How long the interpreter's exit waits for a pool it has to terminate.
_EXIT_GRACE = 10.0


@dataclass(eq=False)
class _WorkerHandle:
    wid: int
    process: BaseProcess
    channel: Channel  # data: TASKS and STOP out; everything the worker says in
    control: Channel  # RECALL, RELEASE and FORGET out, read by the worker's control thread
    watched: bool = False
    control_writing: bool = False  # the selector waits for the control socket to take bytes
    last_function: bytes = b""  # the function of the last task sent: the next may omit it
    writing: bool = False  # the selector also waits for the channel to take queued bytes
    exitcode: int | None = None
    resident: int = 0  # bytes of memory it last reported (0: never measured)
    # The worker's result segments mapped here, and the views of them handed to results, which
    # the worker may reuse once nothing holds them (appended to by the threads that decode).
    maps: SegmentMaps = field(default_factory=SegmentMaps)
    lent: list[Lent] = field(default_factory=list)
    marker: CallMarker | None = None  # the item it is calling (its descriptor came with READY)


class _Reply:
    """A one-shot answer from the scheduler thread to a caller waiting for it."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._value = False

    def answer(self, value: bool) -> None:
        self._value = value
        self._event.set()

    def wait(self) -> bool:
        self._event.wait()
        return self._value


def _mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB"


class ProcessBackend:
    """Runs tasks in local worker processes made by a ``multiprocessing`` context."""

    def __init__(
        self,
        context: Any,
        processes: int,
        maxtasksperchild: int | None,
        initializer: tuple[bytes, tuple[Any, ...]] | None,
        max_memory_per_child: int | None = None,
        name: str = "procpool",
        segments: SegmentPool | None = None,
    ) -> None:
        """``segments``: where the facade put the large buffers of the tasks' arguments; the
        backend gives each back when its task is done and closes the pool at the end."""
        self._ctx = context
        self._segments = segments or SegmentPool()
        self._init = initializer
        self._forks = context.get_start_method() == "fork"
        self._measure_every_task = max_memory_per_child is not None
        self._policy = Policy(processes, maxtasksperchild, max_memory=max_memory_per_child)
        # What happens to each task (attempts, retries, deadlines, outcomes): the policy says
        # where tasks run, the core what becomes of them.
        self._core = TaskCore()
        self._workers: dict[int, _WorkerHandle] = {}
        self._procs: list[BaseProcess] = []
        # The policy's actions being carried out, and whether they are (see _execute).
        self._deferred: deque[Action] = deque()
        self._executing = False
        self._inbox: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]]]
        self._inbox = queue.SimpleQueue()
        self._inbox_lock = threading.Lock()
        self._inbox_closed = False
        self._wake_pending = False
        self._done = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._lifeline_r, self._lifeline_w = Pipe(duplex=False)
        try:
            # The first workers start in the caller's thread, so that a failure to start one
            # (no memory, no file descriptors) raises from the Pool constructor; which of them
            # forks the zygote, if one is made, is the burst's to say (see _zygote.burst).
            actions = self._policy.start()
            with zygote_burst(len(actions)):
                for action in actions:
                    assert isinstance(action, Spawn)
                    self._spawn(action.wid)
        except BaseException:
            self._abort_startup()
            raise
        # At interpreter exit, multiprocessing's own exit handler terminates daemonic children;
        # terminating first keeps the scheduler from seeing those deaths and respawning.
        self._exit_hook = util.Finalize(None, self._terminate_at_exit, exitpriority=20)
        self._thread = threading.Thread(target=self._run, name=f"{name}-scheduler", daemon=True)
        self._thread.start()

    # -- the public side: post a call, maybe wait -------------------------------------------

    def submit(self, tasks: list[PreparedTask]) -> None:
        self._post(self._on_submit, tasks)

    def cancel(self, sink: ResultSink) -> bool:
        reply = _Reply()
        self._post(self._on_cancel, sink, reply)
        return reply.wait()

    def close(self) -> None:
        self._post(self._on_close)

    def terminate(self) -> None:
        self._post(self._on_terminate)
        self._done.wait()

    def join(self, timeout: float | None = None) -> bool:
        if not self._done.wait(timeout):
            return False
        # As multiprocessing.Pool.join() does with its handler threads: once join() returns, the
        # pool's thread has ended, not merely finished its work.
        if self._thread is not threading.current_thread():
            self._thread.join()
        return True

    def repopulate(self) -> None:
        filled = _Reply()
        self._post(self._on_repopulate, filled)
        filled.wait()

    def processes(self) -> list[BaseProcess]:
        return self._procs

    def item_seconds(self, function: bytes, wait: float = 0.0, until: int = 0) -> Measured:
        return self._core.item_seconds(function, wait, until)

    def _post(self, call: Callable[..., None], *args: Any) -> None:
        with self._inbox_lock:
            if not self._inbox_closed:
                self._inbox.put((call, args))
                # One byte wakes the scheduler; while it has not yet drained the pipe, more
                # would only cost system calls.
                if not self._wake_pending:
                    self._wake_pending = True
                    with contextlib.suppress(BlockingIOError):
                        os.write(self._wake_w, b"\0")
                return
        # The scheduler has finished: answer here, on the caller's thread.
        self._answer_after_finish(call, args)

    def _answer_after_finish(self, call: Callable[..., None], args: tuple[Any, ...]) -> None:
        if call == self._on_submit:
            for task in args[0]:
                task.sink._fail(task.index, self._core.final_error(task))
        elif call in (self._on_repopulate, self._on_cancel):
            args[-1].answer(False)  # nothing to do any more

    # -- the scheduler thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._selector.register(self._wake_r, selectors.EVENT_READ, None)
            for handle in self._workers.values():
                self._watch(handle)
            while not self._policy.finished:
                deadline = self._core.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                if timeout is not None:
                    timeout = min(timeout, _LONGEST_WAIT)
                ready = self._selector.select(timeout)
                # Consumers are woken once the round's results are all delivered, not at each.
                wakes.hold()
                try:
                    for key, events in ready:
                        self._on_event(key.data, events)
                finally:
                    wakes.release()
                for task_id in self._core.expired():
                    self._execute(self._policy.timed_out(task_id))
        except BaseException as exc:
            # A bug in procpool itself: fail every task loudly rather than leave anyone waiting.
            self._crash(exc)
        finally:
            self._shutdown()

    def _on_event(self, data: tuple[str, _WorkerHandle] | None, events: int) -> None:
        if data is None:
            self._drain_inbox()
            return
        kind, handle = data
        if handle.wid not in self._workers:
            return  # already dealt with earlier in this round
        if kind == "exit":
            self._reap(handle)
            return
        if kind == "control":
            self._flush_control(handle)
            return
        if events & selectors.EVENT_WRITE:
            self._flush(handle)
        if events & selectors.EVENT_READ and handle.watched:
            self._read(handle)

    def _drain_inbox(self) -> None:
        # One byte is written per wake-up (see _post): one read drains the pipe.
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        # Cleared after the pipe is drained and before the inbox is: a call posted from here on
        # either writes a new byte or is found by the loop below.
        self._wake_pending = False
        for call, args in self._posted():
            call(*args)

    def _posted(self) -> Iterator[tuple[Callable[..., None], tuple[Any, ...]]]:
        """Take the calls posted so far out of the inbox, in order."""
        while True:
            try:
                yield self._inbox.get_nowait()
            except queue.Empty:
                return

    def _read(self, handle: _WorkerHandle) -> bool:
        """Handle the frames that have arrived from the worker; False if none had."""
        try:
            frames = handle.channel.receive()
        except (EOFError, OSError):
            # The worker closed its channel without dying (user code closed the descriptor,
            # say): it can no longer be reached, so end it; its sentinel then reports the exit.
            self._unwatch_channel(handle)
            self._kill(handle)
            return False
        for frame in frames:
            if handle.wid not in self._workers:
                break
            self._on_frame(handle, frame)
        return bool(frames)

    def _on_frame(self, handle: _WorkerHandle, frame: Frame) -> None:
        kind = frame.kind
        if kind == DONE:
            self._on_done(handle, frame)
        elif kind == RECALLED:
            self._execute(self._policy.tasks_recalled(handle.wid, unpack_ids(frame.body)))
        elif kind == FORGET:
            handle.maps.forget(unpack_ids(frame.body))
        elif kind == READY:
            if frame.fds:
                handle.marker = CallMarker(frame.fds[0])
                for fd in frame.fds:
                    os.close(fd)
            self._execute(self._policy.worker_ready(handle.wid))
        elif kind == INIT_FAILED:
            cause = decode_exception(frame.body)
            error = InitializerError(
                f"the pool's initializer raised {type(cause).__name__}: {cause} "
                f"(in worker process {handle.process.pid}); the pool cannot run tasks"
            )
            error.__cause__ = cause
            self._core.break_pool(error)
            self._execute(self._policy.break_pool())

    def _on_done(self, handle: _WorkerHandle, frame: Frame) -> None:
        done = unpack_done(frame.body)
        lent = handle.maps.views(done.segments, frame.fds) if done.segments else None
        if lent is not None:
            handle.lent.append(lent)
        self._release_results(handle)
        if done.resident:
            handle.resident = done.resident
        task_id = done.task_id
        again = False
        # A report the policy no longer expects (the task timed out and is being retried, say)
        # must not be delivered: the task belongs to its next attempt.
        if self._policy.expects_report(handle.wid, task_id):
            task = self._core.task(task_id)
            # (Where it ran is named only for the record of an attempt that runs again.)
            where = f"in worker process {handle.process.pid}" if done.status is Status.RETRY else ""
            again = self._core.completed(
                task_id, done.status, done.payload, lent, where, done.elapsed
            )
            if task is not None and not again:
                self._give_back(task, done.released)
        self._execute(
            self._policy.task_done(handle.wid, task_id, again, done.resident, done.elapsed)
        )

    def _release_results(self, handle: _WorkerHandle) -> None:
        """Tell the worker which of its result segments nothing here refers to any more."""
        if not handle.lent:
            return
        released = [lent for lent in handle.lent if lent.try_release()]
        if released:
            handle.lent = [lent for lent in handle.lent if lent.maps]
            self._queue_frame(
                handle, RELEASE, pack_ids([s for lent in released for s in lent.sids])
            )

    def _give_back(self, task: PreparedTask, reusable: bool = False) -> None:
        """The task is done with its argument segments: reuse them if the worker let go."""
        if not task.segments:
            return
        closed = self._segments.give_back((seg.sid for seg in task.segments), reusable)
        for segment in closed:
            for wid in segment.mapped_by:
                if wid in self._workers:
                    self._queue_frame(self._workers[wid], FORGET, pack_ids([segment.sid]))

    def _reap(self, handle: _WorkerHandle) -> None:
        # Results the worker sent before it died are still in its channel: deliver them first.
        # (Also when the channel is no longer watched: a send to the dying worker failed, and
        # the reports it had sent before it died are still there to read.)
        while handle.wid in self._workers and self._read(handle):
            pass
        if handle.wid not in self._workers:
            return
        self._unwatch_channel(handle)
        self._selector.unregister(handle.process.sentinel)
        handle.process.join(timeout=_EXIT_GRACE)  # the sentinel fired: this only reaps it
        handle.exitcode = handle.process.exitcode
        actions = self._policy.worker_exited(handle.wid)
        if self._policy.state is Lifecycle.BROKEN and self._core.broken is None:
            self._core.break_pool(
                InitializerError(
                    f"worker processes keep dying before they are ready (the last, process "
                    f"{handle.process.pid}, {describe_exit(handle.exitcode)}); the pool cannot run "
                    "tasks. Likely causes: an initializer or an import that kills the process, or, "
                    "under spawn and forkserver, a main script that starts the pool without "
                    "`if __name__ == '__main__':`"
                )
            )
        self._execute(actions)
        del self._workers[handle.wid]
        self._close_handle(handle)
        self._procs = [h.process for h in self._workers.values()]

    def _close_handle(self, handle: _WorkerHandle) -> None:
        if handle.control_writing:
            self._selector.unregister(handle.control)
            handle.control_writing = False
        handle.channel.close()
        handle.control.close()
        handle.maps.close()  # mappings still viewed by results live on with those views
        if handle.marker is not None:
            handle.marker.close()
        self._segments.forget_receiver(handle.wid)

    # -- carrying out the policy's decisions --------------------------------------------------

    def _execute(self, actions: list[Action]) -> None:
        """Carry out the policy's actions in the order it decided them. Carrying one out may
        ask the policy again (a lost task queued again, a frame that could not be sent): those
        actions come after the rest of this list, which the policy decided first. (Were they
        carried out at once, a task queued again could be sent to a worker ahead of one the
        policy had sent it before, and the worker's reports would not come in the order the
        policy expects them.)"""
        if self._executing:
            self._deferred.extend(actions)
            return
        self._executing = True
        try:
            self._deferred.extend(actions)
            while self._deferred:
                self._carry_out(self._deferred.popleft())
        finally:
            self._executing = False
            self._deferred.clear()

    def _carry_out(self, action: Action) -> None:
        if isinstance(action, Send):
            self._send(action)
        elif isinstance(action, Spawn):
            self._respawn(action.wid)
        elif isinstance(action, Stop):
            self._queue_frame(self._workers[action.wid], STOP)
        elif isinstance(action, Recall):
            self._queue_frame(self._workers[action.wid], RECALL, pack_ids(list(action.task_ids)))
        elif isinstance(action, Kill):
            self._kill(self._workers[action.wid])
        elif isinstance(action, Fail):
            self._fail_tasks(action.task_ids, self._core.final_error)
        else:
            self._lost(action)

    def _lost(self, action: Lost) -> None:
        """An attempt ended without an outcome: the core runs the task again, or fails it."""
        task = self._core.task(action.task.task_id)
        if task is None:
            return  # it ended meanwhile
        handle = self._workers[action.wid]
        error: ErrorFactory
        if action.reason is FailReason.TIMED_OUT:

            def error(message: str) -> BaseException:
                return TaskTimeoutError(f"{message}; the worker was replaced")
        else:

            def error(message: str) -> BaseException:
                return WorkerLostError(
                    f"{message}; the pool replaced it", handle.process.pid, handle.exitcode
                )

        what = self._describe_attempt(action.reason, handle, task)
        item = self._item_running(handle, action.task.task_id, task)
        if item is not None:
            again = self._core.item_lost(action.task.task_id, item, what, error)
        else:
            again = self._core.ended(action.task.task_id, what, error)
        if again:
            self._execute(self._policy.requeue(action.task))
        else:
            self._give_back(task)

    @staticmethod
    def _item_running(handle: _WorkerHandle, task_id: int, task: PreparedTask) -> int | None:
        """The item the lost attempt was calling, for a task of several items that fail alone
        (None: another kind of task, one item only, which fails as the task does, or it was
        not calling one: unpickling its arguments, say)."""
        if not task.return_exceptions or task.items < 2 or handle.marker is None:
            return None
        marked_task, item = handle.marker.read()
        return item if marked_task == task_id and 0 <= item < task.items else None

    def _fail_tasks(
        self, task_ids: tuple[int, ...], error: Callable[[PreparedTask], BaseException]
    ) -> None:
        for task in self._core.fail(task_ids, error).values():
            self._give_back(task)

    def _send(self, action: Send) -> None:
        handle = self._workers[action.wid]
        batch = []
        fds: list[int] = []
        for task_id in action.task_ids:
            task = self._core.task(task_id)
            assert task is not None, "the policy sends only tasks the core has not ended"
            if task.timeout is not None:
                self._core.started(task_id)  # it travels alone to an idle worker: it starts now
            function = b"" if task.function == handle.last_function else task.function
            handle.last_function = task.function
            batch.append(
                WireTask(
                    task_id,
                    task.mode,
                    function,
                    task.arguments,
                    task.retry_on,
                    task.return_exceptions,
                    self._refs(task.segments, handle.wid, fds),
                    tuple(task.fallen.items()),
                )
            )
        self._queue_frame(handle, TASKS, pack_tasks(batch), fds, action.task_ids)

    @staticmethod
    def _refs(segments: list[Segment], wid: int, fds: list[int]) -> tuple[SegmentRef, ...]:
        """Name the segments for the worker; a descriptor goes along where it has none yet."""
        refs = []
        for segment in segments:
            has_fd = wid not in segment.mapped_by
            if has_fd:
                segment.mapped_by.add(wid)
                fds.append(segment.fd)
            refs.append(SegmentRef(segment.sid, segment.length, has_fd))
        return tuple(refs)

    def _queue_frame(
        self,
        handle: _WorkerHandle,
        kind: int,
        body: bytes = b"",
        fds: list[int] | None = None,
        task_ids: tuple[int, ...] | None = None,
    ) -> None:
        """Queue a frame for the worker and send what the socket takes now; the rest goes when
        the socket is writable again, so a worker that does not read never blocks this thread.
        ``task_ids``: the tasks the frame carries, queued again should it never be sent."""
        if not handle.watched:
            if task_ids:
                self._execute(self._policy.send_failed(handle.wid, task_ids))
            return  # the channel is closed: the worker's exit is on its way
        if kind in _CONTROL:
            handle.control.queue(kind, [body])
            self._flush_control(handle)
            return
        handle.channel.queue(kind, [body], fds or (), task_ids)
        self._flush(handle)

    def _flush_control(self, handle: _WorkerHandle) -> None:
        """Send queued control frames; wait for the socket to be writable if it is full."""
        try:
            done = handle.control.flush()
        except OSError:
            done = True  # the worker is gone: its data channel says so too
        if done != handle.control_writing:
            return
        handle.control_writing = not done
        if handle.control_writing:
            self._selector.register(handle.control, selectors.EVENT_WRITE, ("control", handle))
        else:
            self._selector.unregister(handle.control)

    def _flush(self, handle: _WorkerHandle) -> None:
        try:
            done = handle.channel.flush()
        except OSError:
            # The worker's end is closed: it is dead or dying, and never got the frames not
            # wholly sent: their tasks are queued again, not failed as if they had run there.
            # Its exit fails the task it was running, if any.
            self._unwatch_channel(handle)
            self._kill(handle)
            unsent = tuple(i for ids in handle.channel.unsent() for i in ids)
            if unsent:
                self._execute(self._policy.send_failed(handle.wid, unsent))
            return
        if done == handle.writing:
            handle.writing = not done
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if handle.writing else 0)
            self._selector.modify(handle.channel, events, ("channel", handle))

    def _respawn(self, wid: int) -> None:
        try:
            handle = self._spawn(wid)
        except Exception as exc:
            actions = self._policy.spawn_failed(wid)
            if self._policy.state is Lifecycle.BROKEN:
                error = BrokenPoolError(f"could not start a worker process: {exc!r}")
                error.__cause__ = exc
                self._core.break_pool(error)
            self._execute(actions)
            return
        self._watch(handle)

    def _spawn(self, wid: int) -> _WorkerHandle:
        parent_end, child_end = socket.socketpair()
        control_end, child_control = socket.socketpair()
        try:
            inherited: tuple[int, ...] = ()
            if self._forks:
                # A forked child inherits the parent's ends of every channel and the lifeline's
                # writer; it closes them so that their EOF still means what it should.
                inherited = (
                    self._lifeline_w.fileno(),
                    parent_end.fileno(),
                    control_end.fileno(),
                    *(h.channel.fileno() for h in self._workers.values()),
                    *(h.control.fileno() for h in self._workers.values()),
                )
            process = self._ctx.Process(
                target=worker_main,
                args=(
                    child_end,
                    child_control,
                    self._lifeline_r,
                    inherited,
                    self._init,
                    self._measure_every_task,
                ),
                daemon=True,
            )
            process.name = process.name.replace("Process", "PoolWorker")
            # A worker's target never returns a value anyone asks for: no result pipe.
            process._sends_result = False
            process.start()
        except BaseException:
            parent_end.close()
            control_end.close()
            raise
        finally:
            child_end.close()
            child_control.close()
        handle = _WorkerHandle(
            wid, process, Channel(parent_end, blocking=False), Channel(control_end, blocking=False)
        )
        self._workers[wid] = handle
        self._procs = [h.process for h in self._workers.values()]
        return handle

    def _watch(self, handle: _WorkerHandle) -> None:
        self._selector.register(handle.channel, selectors.EVENT_READ, ("channel", handle))
        self._selector.register(handle.process.sentinel, selectors.EVENT_READ, ("exit", handle))
        handle.watched = True

    def _unwatch_channel(self, handle: _WorkerHandle) -> None:
        if handle.watched:
            self._selector.unregister(handle.channel)
            handle.watched = False

    @staticmethod
    def _kill(handle: _WorkerHandle) -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            handle.process.kill()

    @staticmethod
    def _describe_attempt(reason: FailReason, handle: _WorkerHandle, task: PreparedTask) -> str:
        """What happened to an attempt at a task on this worker, in words."""
        pid = handle.process.pid
        if reason is FailReason.TIMED_OUT:
            return (
                f"ran past its {task.timeout:g} s timeout in worker process {pid}, which was killed"
            )
        memory = f" (its last reported memory: {_mib(handle.resident)})" if handle.resident else ""
        return (
            f"was running in worker process {pid}, which {describe_exit(handle.exitcode)}{memory}"
        )

    # -- posted calls, run on the scheduler thread ------------------------------------------

    def _on_submit(self, tasks: list[PreparedTask]) -> None:
        ids = self._core.add(tasks)  # None: refused, and failed already
        infos = [
            TaskInfo(
                task_id,
                task.timeout,
                len(task.function) + len(task.arguments),
                task.mode is not Mode.APPLY,
            )
            for task_id, task in zip(ids, tasks, strict=True)
            if task_id is not None
        ]
        if infos:
            self._execute(self._policy.submit(infos))

    def _on_cancel(self, sink: ResultSink, reply: _Reply) -> None:
        cancelled = {}
        try:
            cancelled = self._core.cancel(sink)  # the result is failed before cancel() returns
            self._execute(self._policy.cancel(cancelled))
            for task in cancelled.values():
                self._give_back(task)
        finally:
            reply.answer(bool(cancelled))

    def _on_close(self) -> None:
        self._execute(self._policy.close())

    def _on_terminate(self) -> None:
        self._core.terminate()
        self._execute(self._policy.terminate())

    def _on_repopulate(self, filled: _Reply) -> None:
        self._execute(self._policy.repopulate())
        filled.answer(True)

    # -- endings ------------------------------------------------------------------------------

    def _crash(self, exc: BaseException) -> None:
        error = ProcpoolError(f"procpool's scheduler failed ({exc!r}); the pool has stopped")
        error.__cause__ = exc
        self._core.break_pool(error)
        self._core.fail(self._core.unfinished(), self._core.final_error)

    def _shutdown(self) -> None:
        with self._inbox_lock:
            self._inbox_closed = True
        for call, args in self._posted():
            self._answer_after_finish(call, args)
        for handle in list(self._workers.values()):
            self._kill(handle)
            with contextlib.suppress(Exception):
                handle.process.join(_EXIT_GRACE)
            self._close_handle(handle)
        self._workers.clear()
        self._procs = []
        self._close_descriptors()
        # Nothing may be left waiting: every task has ended by now, and this is the guarantee
        # should a bug have left one behind.
        self._core.terminate()
        self._segments.close()
        self._exit_hook.cancel()
        self._done.set()

    def _abort_startup(self) -> None:
        """Undo a constructor that failed half-way: no worker may outlive it."""
        for handle in self._workers.values():
            if handle.process.exitcode is None:
                handle.process.terminate()
        for handle in self._workers.values():
            handle.process.join()
            self._close_handle(handle)
        self._workers.clear()
        self._segments.close()
        self._close_descriptors()

    def _close_descriptors(self) -> None:
        """Close what the backend opened for itself (its workers' channels are closed apart)."""
        self._lifeline_w.close()
        self._lifeline_r.close()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _terminate_at_exit(self) -> None:
        self._post(self._on_terminate)
        self._done.wait(_EXIT_GRACE)
