"""Progress of a map: how many items are done, shown as a bar or passed to a function.

The ``progress=`` option of ``map``, ``map_async``, ``starmap``, ``starmap_async``, ``imap``
and ``imap_unordered``:

* ``True``: a tqdm bar on stderr (count, rate, and the total and ETA when the input has a
  length), shown only when stderr is a terminal, so logs and pipes stay clean;
* ``"force"``: the bar even when stderr is not a terminal;
* a callable: ``progress(done, total)`` with the number of items done so far and the total
  (``None`` when the input has no length), instead of a bar;
* ``False`` or ``None`` (the default): nothing.

Items are counted where their chunk's outcome arrives (the result sinks, on the pool's
scheduler thread), which costs an addition and, at most once per report, setting an event. The
bar itself, or the callable, runs on a thread of its own that first reports after
:data:`INTERVAL`, then wakes when items are done and rests for :data:`INTERVAL` again: at most
ten reports a second however fast items finish, and never a terminal write on the scheduler
thread. A report always follows the last item (so a job shorter than INTERVAL gets that one
report only), and ``get()`` or the end of an imap returns only once it is out. A
callable that raises gets no more reports, and its exception is raised where the results are
taken (``get()``, the end of an imap), once they are all in.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, Literal

__all__ = ["INTERVAL", "Progress", "ProgressOption"]

ProgressOption = bool | Literal["force"] | Callable[[int, int | None], object] | None

# Seconds between two reports at most; tqdm's own default refresh interval.
INTERVAL = 0.1


class Progress:
    """Counts a job's items done and reports them from a thread of its own.

    One thread adds (the scheduler thread for a pool's results, the main thread for the
    ``procpool`` command); :meth:`close` ends the reports, :meth:`join` waits for the last.
    """

    def __init__(self, report: Callable[[int], object], finish: Callable[[], object]) -> None:
        self._report = report
        self._finish = finish
        self._done = 0
        self._wake = threading.Event()
        self._closed = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="procpool-progress", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, option: ProgressOption, total: int | None, unit: str = "item") -> Progress:
        """The reporter ``option`` asks for, for a job of ``total`` items (None: unknown); a
        :class:`NoProgress` when it asks for none."""
        if callable(option):
            call = option
            return cls(lambda done: call(done, total), lambda: None)
        if option not in (True, False, None, "force"):
            raise ValueError(f"progress must be True, False, 'force' or a callable, not {option!r}")
        if not option or (option is True and not _is_terminal(sys.stderr)):
            return NoProgress()
        return _bar(total, unit)

    def add(self, items: int) -> None:
        """Count ``items`` more done (cheap: no I/O, no lock)."""
        self._done += items
        if not self._wake.is_set():
            self._wake.set()

    def close(self) -> None:
        """No more items: the thread makes its last report and ends (without waiting)."""
        self._closed.set()
        self._wake.set()

    def join(self) -> None:
        """Wait for the last report; raise what the progress callable raised, if it did."""
        self._thread.join()
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        self._thread.join()

    def _run(self) -> None:
        shown = -1
        try:
            # The first report comes after INTERVAL: a job that ends sooner costs one report,
            # its last, instead of a bar drawn while the job is running.
            self._closed.wait(INTERVAL)
            while not self._closed.is_set():
                self._wake.wait()
                self._wake.clear()
                if self._done != shown:
                    shown = self._done
                    self._report(shown)
                self._closed.wait(INTERVAL)
            if self._done != shown:
                self._report(self._done)
        except BaseException as exc:
            self.error = exc
        finally:
            self._finish()


class NoProgress(Progress):
    """No reports: every method does nothing."""

    def __init__(self) -> None:
        self.error = None

    def add(self, items: int) -> None:
        pass

    def close(self) -> None:
        pass

    def join(self) -> None:
        pass

    def __exit__(self, *exc_info: object) -> None:
        pass


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _bar(total: int | None, unit: str) -> Progress:
    """A tqdm bar on stderr. tqdm is imported and the bar made on the first report, on the
    reporting thread, so a job that shows a bar does not wait for it."""
    bar: Any = None

    def report(done: int) -> None:
        nonlocal bar
        if bar is None:
            bar = _new_bar(total, unit, done)
        else:
            bar.update(done - bar.n)

    def finish() -> None:
        if bar is not None:
            bar.close()

    return Progress(report, finish)


def _new_bar(total: int | None, unit: str, done: int) -> Any:
    from tqdm import tqdm

    class Bar(tqdm):  # type: ignore[type-arg]
        # No tqdm monitor thread: the reports already come at most every INTERVAL.
        monitor_interval = 0

    return Bar(
        total=total, initial=done, unit=unit, file=sys.stderr, mininterval=0, dynamic_ncols=True
    )
