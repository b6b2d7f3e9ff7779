"""The thread that runs a pool's ``callback`` and ``error_callback`` functions.

Callbacks are user code: run on the scheduler thread, a slow one would stall every worker and a
blocking one (a callback that calls ``pool.map``) would deadlock the pool. They run here instead,
one at a time, in completion order. The thread starts with the first callback.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

__all__ = ["CallbackRunner"]


class CallbackRunner:
    """Runs posted calls on one lazily started thread; :meth:`close` finishes them and stops."""

    def __init__(self, name: str = "procpool") -> None:
        self._name = f"{name}-callbacks"
        self._calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def post(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the callback thread. It must not raise: results catch their own."""
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                thread.start()  # may raise (at interpreter shutdown): then there is no thread
                self._thread = thread
        self._calls.put(call)

    def close(self) -> None:
        """Run every call already posted, then stop the thread (from any thread but its own)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._calls.put(None)
        if thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            call()
            # A finished call must not keep what it references (a result, its exception and
            # that exception's frames, up to a whole executor) alive until the next call.
            del call
