"""The Dask backend: a Pool's tasks run on a Dask cluster, with the local pool's guarantees.

Each attempt at a procpool task becomes one Dask task calling
:func:`procpool._dask_task.run_task` with the function and arguments pickled by the facade (in
band: no shared memory across machines). Dask is used for placement and transport only; what
happens to a task (its attempts, retries, outcome) is decided by the task core (``_tasks``), as
for the local backend, and every outcome reaches the task's result sink:

* a result or an exception comes back still pickled and is unpickled lazily in the caller's
  thread, the remote traceback attached as ``__cause__``;
* a worker lost mid-task fails the tasks that had started on it with :class:`WorkerLostError`
  (or runs them again when ``retries`` allow), never with ``KilledWorker``. Tasks are submitted
  with ``retries=0``. Each task announces its start (a Dask event) and the pool watches the
  scheduler's worker removals: the tasks that had started on the lost worker are taken back
  from Dask (cancelled) and failed here; those only queued there are left to Dask, which runs
  them elsewhere. The scheduler of a LocalCluster the pool starts itself allows no failure
  (``allowed-failures: 0``), so Dask never starts a lost task again; an existing scheduler with
  Dask's default (3) may start it again elsewhere before the pool's cancellation reaches it
  (that run's result is discarded), and a task lost within milliseconds of its start, before its
  announcement left the worker, is run again by Dask as though it never started (docs/dask.md);
* ``task_timeout`` is enforced on the worker: the call is interrupted at its deadline and the
  task fails with :class:`TaskTimeoutError` (see ``_dask_task._run_with_deadline`` for what a
  call blocked in native code does);
* ``retries`` and ``retry_on`` re-submit the task as a new Dask task, its earlier attempts noted
  on the final error as locally;
* the initializer runs once in each Dask worker process through a worker plugin; one that
  raises fails the pool's tasks with :class:`InitializerError`.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import queue
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._backend import Measured, PreparedTask, ResultSink
from ._dask_task import INIT_FAILED, TIMED_OUT, Initializer, run_task, started_topic
from ._errors import InitializerError, ProcpoolError, TaskTimeoutError, WorkerLostError
from ._policy import Lifecycle
from ._protocol import Status
from ._serialize import decode_exception
from ._tasks import ErrorFactory, TaskCore

__all__ = ["DaskBackend"]

# Scheduler settings of the LocalCluster a pool starts itself: a worker's death fails its task at
# once instead of Dask running it again, and each worker holds only the tasks it runs.
_LOCAL_CLUSTER_CONFIG = {
    "distributed.scheduler.allowed-failures": 0,
    "distributed.scheduler.worker-saturation": 1.0,
}


@dataclass(eq=False)
class _Attempt:
    """One Dask task standing for one attempt at a procpool task."""

    task_id: int
    task: PreparedTask
    key: str = ""
    future: Any = None
    worker: str | None = None  # the Dask worker it announced its start on


class DaskBackend:
    """Runs a Pool's tasks on a Dask cluster: an existing ``distributed.Client``, a scheduler's
    address, or a ``LocalCluster`` on 127.0.0.1 that it starts and stops itself."""

    def __init__(
        self,
        *,
        client: Any = None,
        address: str | None = None,
        processes: int | None = None,
        initializer: tuple[bytes, tuple[Any, ...]] | None = None,
    ) -> None:
        import dask
        from distributed import Client, LocalCluster

        self._name = f"procpool-{uuid.uuid4().hex[:12]}"
        self._owned: list[Any] = []  # what this backend started and closes: client, cluster
        self._client: Any = None
        self._plugin = initializer is not None
        if client is None:
            if address is None:
                with dask.config.set(_LOCAL_CLUSTER_CONFIG):
                    cluster = LocalCluster(  # type: ignore[no-untyped-call]
                        n_workers=processes,
                        threads_per_worker=1,
                        processes=True,
                        host="127.0.0.1",
                        dashboard_address=":0",
                    )
                self._owned.append(cluster)
                address = cluster.scheduler_address
            try:
                client = Client(address, set_as_default=False)  # type: ignore[no-untyped-call]
            except BaseException:
                self._release()
                raise
            self._owned.insert(0, client)
        self._client = client
        self._lock = threading.RLock()
        self._core = TaskCore()
        self._attempts: dict[str, _Attempt] = {}  # key -> attempts in flight
        self._keys = itertools.count()
        self._state = Lifecycle.RUN
        self._closed = False  # close() was called: release the cluster once the work is done
        self._done = threading.Event()
        self._finisher: threading.Thread | None = None
        # Attempts registered, from any thread to the submitter; futures that ended, from
        # Dask's callback thread to the collector. None stops either thread.
        self._to_submit: queue.SimpleQueue[list[_Attempt] | None] = queue.SimpleQueue()
        self._ended: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for work, role in ((self._submit, "submitter"), (self._collect, "collector")):
            threading.Thread(target=work, name=f"{self._name}-{role}", daemon=True).start()
        # At interpreter exit a pool still open is terminated while threads can still start
        # and Dask's connections still work (a pool collected later could not stop its cluster).
        atexit.register(self.terminate)
        try:
            client.subscribe_topic(started_topic(self._name), self._on_started)
            _listen_to_cluster(client, self)
            if initializer is not None:
                client.register_plugin(Initializer(self._name, *initializer), name=self._name)
        except BaseException:
            self._finish()
            raise

    @property
    def size(self) -> int:
        """Threads the cluster runs tasks on now (at least 1): the pool's size."""
        threads: int = sum(self._client.nthreads().values())
        return max(1, threads)

    # -- the Backend interface ----------------------------------------------------------------

    def submit(self, tasks: list[PreparedTask]) -> None:
        ids = self._core.add(tasks)  # None: refused, and failed already
        self._start(
            [_Attempt(i, task) for i, task in zip(ids, tasks, strict=True) if i is not None]
        )

    def cancel(self, sink: ResultSink) -> bool:
        cancelled = self._core.cancel(sink)
        with self._lock:
            found = [a for a in self._attempts.values() if a.task_id in cancelled]
            for attempt in found:
                del self._attempts[attempt.key]
        self._cancel_futures(found)
        with self._lock:
            self._finish_if_done()
        return bool(cancelled)

    def close(self) -> None:
        with self._lock:
            if self._state is Lifecycle.RUN:
                self._state = Lifecycle.CLOSE
            self._closed = True
            self._finish_if_done()

    def terminate(self) -> None:
        with self._lock:
            if self._state is not Lifecycle.TERMINATE:
                self._state = Lifecycle.TERMINATE
            found = list(self._attempts.values())
            self._attempts.clear()
            finisher = self._finisher
        self._core.terminate()
        self._cancel_futures(found)
        if finisher is not None:
            finisher.join()
        elif not self._done.is_set():
            self._finish()

    def join(self, timeout: float | None = None) -> bool:
        if not self._done.wait(timeout):
            return False
        finisher = self._finisher
        if finisher is not None and finisher is not threading.current_thread():
            finisher.join()
        return True

    def item_seconds(self, function: bytes, wait: float = 0.0, until: int = 0) -> Measured:
        return self._core.item_seconds(function, wait, until)

    # -- submitting attempts ------------------------------------------------------------------

    def _start(self, attempts: list[_Attempt]) -> None:
        """Register attempts and queue them for the submitter, or fail them if the pool cannot
        run them (it was terminated, or broke, since the core accepted them)."""
        if not attempts:
            return
        with self._lock:
            refused = self._state in (Lifecycle.TERMINATE, Lifecycle.BROKEN)
            if not refused:
                for attempt in attempts:
                    attempt.key = f"{self._name}-{next(self._keys)}"
                    attempt.worker = None
                    self._attempts[attempt.key] = attempt
        if refused:
            self._core.fail([a.task_id for a in attempts], self._core.final_error)
        else:
            self._to_submit.put(attempts)

    def _submit(self) -> None:
        """The submitter thread: hands the registered attempts to Dask, as many in one call as
        have come since the last (each call costs the scheduler a graph update)."""
        while self._submit_batch():
            pass

    def _submit_batch(self) -> bool:
        """Submit what was registered since the last batch; False once the backend finished."""
        batches = [self._to_submit.get()]
        while not self._to_submit.empty():
            batches.append(self._to_submit.get())
        attempts: list[_Attempt] = []
        with self._lock:  # those failed meanwhile (cancelled, terminated) are left out
            for batch in batches:
                if batch is None:
                    return False  # the backend has finished
                attempts += [a for a in batch if self._attempts.get(a.key) is a]
        if attempts:
            try:
                self._run(attempts)
            except Exception as exc:  # the client was closed, or lost its scheduler
                self._could_not_submit(attempts, exc)
        return True

    def _could_not_submit(self, attempts: list[_Attempt], exc: Exception) -> None:
        with self._lock:
            failed = [a.task_id for a in attempts if self._attempts.pop(a.key, None) is a]
        self._core.fail(failed, _caused(exc, "Dask did not accept task {label}: {exc!r}"))
        with self._lock:
            self._finish_if_done()

    def _run(self, attempts: list[_Attempt]) -> None:
        tasks = [a.task for a in attempts]
        futures = self._client.map(
            run_task,
            [self._name] * len(tasks),
            [t.function for t in tasks],
            [t.arguments for t in tasks],
            [int(t.mode) for t in tasks],
            [t.retry_on for t in tasks],
            [t.return_exceptions for t in tasks],
            [t.timeout for t in tasks],
            key=[a.key for a in attempts],
            pure=False,
            retries=0,
        )
        stale = []
        with self._lock:
            for attempt, future in zip(attempts, futures, strict=True):
                attempt.future = future
                if self._attempts.get(attempt.key) is not attempt:
                    stale.append(future)  # terminated or cancelled meanwhile
        if stale:
            self._client.cancel(stale)
        for future in futures:
            future.add_done_callback(self._on_done)

    # -- outcomes (on the collector thread, and on the client's event loop) ---------------------

    def _on_done(self, future: Any) -> None:
        """(On Dask's callback thread.) Hand the finished future to the collector."""
        self._ended.put(future)

    def _collect(self) -> None:
        """The collector thread: takes the futures that ended, as many at a time as there are,
        and fetches the results of those that finished in one round trip to the cluster."""
        while self._collect_batch():
            pass

    def _collect_batch(self) -> bool:
        """Settle the futures that ended since the last batch; False once the backend finished.
        (A method of its own: no future outlives it, so Dask may release the results.)"""
        futures = [self._ended.get()]
        while not self._ended.empty():
            futures.append(self._ended.get())
        if None in futures:
            return False  # the backend has finished
        ended: list[tuple[_Attempt, Any]] = []
        with self._lock:
            for future in futures:
                # An attempt already gone was failed meanwhile (lost with its worker,
                # cancelled, terminated): its future's outcome is no longer wanted.
                attempt = self._attempts.pop(future.key, None)
                if attempt is not None:
                    ended.append((attempt, future))
        finished = [(attempt, f) for attempt, f in ended if f.status == "finished"]
        try:
            values = self._client.gather([f for _, f in finished]) if finished else []
        except Exception:  # one result was lost meanwhile: fetch them one by one
            values = [None] * len(finished)
        outcomes = dict(zip((f.key for _, f in finished), values, strict=True))
        for attempt, future in ended:
            self._settle(attempt, future, outcomes.get(future.key))
        with self._lock:
            self._finish_if_done()
        return True

    def _settle(self, attempt: _Attempt, future: Any, value: Any) -> None:
        """Deliver an attempt's outcome (``value``: its result, when already fetched)."""
        try:
            if future.status == "finished":
                status, payload, seconds = future.result() if value is None else value
                self._finished(attempt, status, memoryview(payload), seconds)
            else:
                self._unfinished(attempt, future)
        except Exception as exc:  # the client lost its scheduler while reading the result, say
            self._core.fail(
                [attempt.task_id], _caused(exc, "the result of task {label} was lost: {exc!r}")
            )

    def _unfinished(self, attempt: _Attempt, future: Any) -> None:
        from distributed.scheduler import KilledWorker

        if future.status == "error":
            exc = future.exception()
            if not isinstance(exc, KilledWorker):
                self._core.fail(
                    [attempt.task_id],
                    _caused(
                        exc,
                        "Dask could not run task {label}: {exc!r} (is procpool installed, in "
                        "the same version, on the Dask workers?)",
                    ),
                )
            else:  # Dask gave up on it after its worker(s) died
                self._lost(attempt, exc.last_worker.address if exc.last_worker else None)
        else:  # cancelled or lost by Dask itself, not by the pool
            self._attempt_ended(
                attempt,
                f"was dropped by Dask ({future.status}): the connection to its scheduler was "
                "lost, or the scheduler restarted",
                WorkerLostError,
            )

    def _finished(
        self, attempt: _Attempt, status: int, payload: memoryview, seconds: float
    ) -> None:
        where = f"on Dask worker {attempt.worker}" if attempt.worker else "on a Dask worker"
        if status == INIT_FAILED:
            self._break(attempt, payload, where)
        elif status == TIMED_OUT:
            self._attempt_ended(
                attempt,
                f"ran past its {attempt.task.timeout:g} s timeout {where}, where it was "
                "interrupted",
                TaskTimeoutError,
            )
        elif self._core.completed(
            attempt.task_id, Status(status), payload, where=where, elapsed=seconds
        ):
            self._start([attempt])  # it raised an exception worth a retry

    def _lost(self, attempt: _Attempt, worker: str | None) -> None:
        self._attempt_ended(
            attempt,
            f"was running on Dask worker {worker or '(unknown)'}, which left the cluster",
            WorkerLostError,
        )

    def _attempt_ended(self, attempt: _Attempt, what: str, kind: ErrorFactory) -> None:
        """An attempt ended without an outcome: run the task again if the core says so."""
        if self._core.ended(attempt.task_id, what, lambda m: kind(f"{m}; the pool goes on")):
            self._start([attempt])

    def _on_started(self, event: tuple[float, Any]) -> None:
        key, worker = event[1]
        with self._lock:
            attempt = self._attempts.get(key)
            if attempt is not None:
                attempt.worker = worker

    def on_cluster_event(self, event: tuple[float, Any]) -> None:
        """(On the client's event loop.) A worker left: the tasks that had started on it are
        lost, and are handled on a thread of their own (cancelling and resubmitting are
        blocking calls, which the event loop must not make)."""
        message = event[1]
        if isinstance(message, dict) and message.get("action") == "remove-worker":
            keys = set(message.get("processing-tasks", ()))
            threading.Thread(
                target=self._worker_left,
                args=(message.get("worker"), keys),
                name=f"{self._name}-lost",
                daemon=True,
            ).start()

    def _worker_left(self, worker: str | None, keys: set[str]) -> None:
        """Dask would run the tasks that started on the lost worker again (or end them with
        KilledWorker): they are taken from it, and failed or retried here."""
        with self._lock:
            lost = [
                self._attempts.pop(key)
                for key in keys
                if key in self._attempts and self._attempts[key].worker == worker
            ]
        if not lost:
            return
        self._client.cancel([a.future for a in lost if a.future is not None])
        for attempt in lost:
            self._lost(attempt, worker)
        with self._lock:
            self._finish_if_done()

    def _break(self, attempt: _Attempt, payload: memoryview, where: str) -> None:
        """The initializer raised in a worker: this task, and every other task of the pool,
        fails with InitializerError."""
        cause = decode_exception(payload)
        error = InitializerError(
            f"the pool's initializer raised {type(cause).__name__}: {cause} ({where}); the pool "
            "cannot run tasks"
        )
        error.__cause__ = cause
        self._core.break_pool(error)
        with self._lock:
            self._state = Lifecycle.BROKEN
            found = list(self._attempts.values())
            self._attempts.clear()
        self._core.fail(self._core.unfinished(), self._core.final_error)
        self._cancel_futures(found)

    def _cancel_futures(self, attempts: list[_Attempt]) -> None:
        """Take these attempts (already out of the record) back from Dask."""
        futures = [a.future for a in attempts if a.future is not None]
        if futures:
            with contextlib.suppress(Exception):
                self._client.cancel(futures)

    # -- the end ------------------------------------------------------------------------------

    def _finish_if_done(self) -> None:
        """(Under the lock.) Closed with nothing left to run: release the cluster on a thread of
        its own (this may be one of Dask's threads)."""
        if not self._closed or self._core or self._finisher is not None or self._done.is_set():
            return
        self._finisher = threading.Thread(
            target=self._finish, name=f"{self._name}-shutdown", daemon=True
        )
        self._finisher.start()

    def _finish(self) -> None:
        atexit.unregister(self.terminate)
        self._release()
        self._done.set()
        self._to_submit.put(None)
        self._ended.put(None)

    def _release(self) -> None:
        """Undo what the constructor did: the subscriptions and the plugin on the client, then
        the client and cluster this backend started."""
        client = self._client
        if client is not None:
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(started_topic(self._name))
            with contextlib.suppress(Exception):
                _stop_listening(client, self)
            if self._plugin:
                with contextlib.suppress(Exception):
                    client.unregister_worker_plugin(self._name)
        for thing in self._owned:
            with contextlib.suppress(Exception):
                thing.close()
        self._owned = []


def _caused(exc: BaseException, message: str) -> Callable[[PreparedTask], BaseException]:
    """Fails a task with ProcpoolError(``message``), caused by ``exc`` (the message's
    ``{label}`` names the task, ``{exc!r}`` is the cause)."""

    def error(task: PreparedTask) -> BaseException:
        error = ProcpoolError(message.format(label=task.label, exc=exc))
        error.__cause__ = exc
        return error

    return error


# A client keeps one handler per event topic: the pools that share a client share its handler
# for the scheduler's events ("all"), which passes each event to every one of them.
_listeners: dict[int, list[DaskBackend]] = {}
_listeners_lock = threading.Lock()


def _listen_to_cluster(client: Any, backend: DaskBackend) -> None:
    with _listeners_lock:
        backends = _listeners.setdefault(id(client), [])
        backends.append(backend)
        if len(backends) == 1:
            client.subscribe_topic("all", lambda event: _dispatch(backends, event))


def _dispatch(backends: list[DaskBackend], event: tuple[float, Any]) -> None:
    with _listeners_lock:
        listening = list(backends)
    for backend in listening:
        backend.on_cluster_event(event)


def _stop_listening(client: Any, backend: DaskBackend) -> None:
    with _listeners_lock:
        backends = _listeners.get(id(client), [])
        if backend in backends:
            backends.remove(backend)
        if not backends:
            _listeners.pop(id(client), None)
            client.unsubscribe_topic("all")
