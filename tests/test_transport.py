"""The transport end to end: large buffers in shared memory, and workers that die or freeze in
the middle of a transfer.

Large buffers (bytes, bytearrays, memoryviews and numpy arrays of at least 128 KiB) travel in
memfd segments beside the frames, and segments are reused once the receiver lets go. The tests
check that values arrive intact both ways, that a segment is never written again while anything
on the receiving side still refers to it (a worker's global, a caller's variable), that segments
are reused rather than made anew, and that nothing leaks: no file in ``/dev/shm``, no
``/memfd:procpool`` descriptor or mapping in the parent once the pool is closed, whatever
worker was killed or frozen at whatever point of a transfer.

Synchronisation: tasks check in with a :class:`_helpers.Rendezvous` and wait there. Where a test
must act while bytes are on their way (kill or freeze a worker mid-transfer), it waits, without
sleeping and under a bound, for the transfer to show: the resident memory of the process that
fills the transfer's buffer grows (the parent's, for a large frame; the worker's, for a
segment). Every process is accounted for at the end.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import procpool
from procpool import PoolTerminatedError, TaskTimeoutError, WorkerLostError

TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:  # workers find the task modules through sys.path (spawn copies it)
    sys.path.insert(0, TESTS_DIR)

from _helpers import (  # noqa: E402
    Rendezvous,
    block,
    child_processes,
    helper_pids,
    identity,
    square,
    stat,
    wait_gone,
)
from _pools import WAIT, Audit, close_and_check, live_workers  # noqa: E402
from _transport_tasks import (  # noqa: E402
    block_then_return,
    describe,
    describe_all,
    getpid,
    keep,
    kept,
    make,
    plus_one,
    receive_then_block,
    roundtrip,
)

MIB = 2**20
THRESHOLD = 128 * 1024  # buffers this large travel out of band (procpool._shm.OOB_THRESHOLD)
PAGE = os.sysconf("SC_PAGE_SIZE")

# -- helpers -------------------------------------------------------------------------------------


def memfds(pid: int | str = "self") -> dict[int, str]:
    """procpool's shared-memory descriptors open in a process: fd -> link target."""
    found = {}
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        try:
            target = os.readlink(f"{base}/{name}")
        except FileNotFoundError:
            continue  # closed meanwhile (the listing's own descriptor, say)
        if target.startswith("/memfd:procpool"):
            found[int(name)] = target
    return found


def memfd_mappings(pid: int | str = "self") -> list[str]:
    """procpool's shared-memory segments mapped in a process, one entry per mapping."""
    with open(f"/proc/{pid}/maps") as f:
        return sorted(line.split(maxsplit=5)[5].strip() for line in f if "/memfd:procpool" in line)


def memfd_inodes(pid: int | str = "self") -> dict[int, int]:
    """procpool's shared-memory descriptors open in a process: fd -> the segment's inode."""
    found = {}
    for fd in memfds(pid):
        try:
            found[fd] = os.stat(f"/proc/{pid}/fd/{fd}").st_ino
        except FileNotFoundError:
            continue
    return found


def resident(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def filled(pid: int | str = "self") -> int:
    """A process's resident memory plus the pages of the segments it holds: a new segment is
    filled with write(2), so its pages grow without being mapped (resident)."""
    total = resident(pid)
    for fd in memfds(pid):
        try:
            total += os.stat(f"/proc/{pid}/fd/{fd}").st_blocks * 512
        except FileNotFoundError:
            continue
    return total


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded, without sleeping: yielding the CPU) until ``condition()`` holds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        os.sched_yield()


def still_works(pool: procpool.Pool) -> None:
    """Small tasks and large ones both ways, after whatever happened."""
    assert pool.map(square, range(10)) == [i * i for i in range(10)]
    values = [make("bytes", MIB + i, i) for i in range(4)]
    outcomes = pool.map(roundtrip, values, chunksize=1)
    assert [desc for desc, _ in outcomes] == [describe(v) for v in values]
    assert [back for _, back in outcomes] == values


def shm_entries() -> set[str]:
    """What /dev/shm holds that could be this test's. Other programs on the machine (other test
    runs) create and remove multiprocessing semaphores there all the time, so a semaphore counts
    only while this process or one of its children maps it; any other name counts."""
    ours = set()
    for pid in (os.getpid(), *child_processes(), *helper_pids()):
        try:
            with open(f"/proc/{pid}/maps") as f:
                ours |= {line.split("/dev/shm/")[1].split()[0] for line in f if "/dev/shm/" in line}
        except OSError:
            continue  # gone meanwhile
    return {e for e in os.listdir("/dev/shm") if not e.startswith("sem.mp-") or e in ours}


# What this process held before the test (segments of earlier tests that failed live on in
# their tracebacks): only what is new counts as left behind.
_held_before: dict[str, Any] = {"fds": set(), "maps": Counter()}


def assert_no_segments_left() -> None:
    gc.collect()
    fds = set(memfds().items()) - _held_before["fds"]
    maps = Counter(memfd_mappings()) - _held_before["maps"]
    assert not fds, f"segment descriptors left in the parent: {fds}"
    assert not maps, f"segments left mapped in the parent: {maps}"


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """After every test (its pools terminated): nothing new in /dev/shm, and no new segment left
    open or mapped in this process. Not after a test that failed: its traceback keeps its pool
    and values alive, and the failure is reported already."""
    shm_before = set(os.listdir("/dev/shm"))
    _held_before.update(fds=set(memfds().items()), maps=Counter(memfd_mappings()))
    yield
    if getattr(sys, "last_value", None) is not None:  # pytest's record of the test's failure
        return
    assert shm_entries() - shm_before == set(), "files left in /dev/shm"
    assert_no_segments_left()


@pytest.fixture
def pools() -> Iterator[Callable[..., procpool.Pool]]:
    """Makes pools (forkserver unless told); terminates whatever the test left running."""
    made: list[procpool.Pool] = []

    def make_pool(processes: int = 2, method: str = "forkserver", **kwargs: Any) -> procpool.Pool:
        pool = procpool.Pool(processes, context=procpool.get_context(method), **kwargs)
        made.append(pool)
        return pool

    yield make_pool
    for pool in made:
        pool.terminate()
        pool.join()


class Freezer:
    """Stops workers with SIGSTOP; whatever happens, kills them at the end. Signals go through
    pidfds, so a pid reused after its worker was reaped is never signalled."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self._pidfds: list[int] = []

    def stop(self, pid: int) -> None:
        pidfd = os.pidfd_open(pid)
        self._pidfds.append(pidfd)
        self.pids.append(pid)
        signal.pidfd_send_signal(pidfd, signal.SIGSTOP)
        wait_for(lambda: stopped(pid), f"worker {pid} is stopped")

    def close(self) -> None:
        for pidfd in self._pidfds:
            for sig in (signal.SIGKILL, signal.SIGCONT):
                try:
                    signal.pidfd_send_signal(pidfd, sig)
                except ProcessLookupError:
                    pass
            os.close(pidfd)
        self._pidfds.clear()


@pytest.fixture
def freezer(pools: Callable[..., procpool.Pool]) -> Iterator[Freezer]:
    """Set up after ``pools``, so torn down (frozen workers killed) before pools terminate."""
    freezer = Freezer()
    try:
        yield freezer
    finally:
        freezer.close()


@pytest.fixture
def rendezvous3() -> Iterator[tuple[Rendezvous, Rendezvous, Rendezvous]]:
    """Three rendezvous, so that tasks are let go one at a time."""
    with Rendezvous(WAIT) as a, Rendezvous(WAIT) as b, Rendezvous(WAIT) as c:
        yield a, b, c


# -- values arrive intact, both ways ---------------------------------------------------------


def bytes_like_values() -> list[Any]:
    big = bytearray(make("bytes", 3 * MIB, 0))
    big[::7] = bytes(range(256)) * (len(big[::7]) // 256) + bytes(len(big[::7]) % 256)
    return [
        make("bytes", THRESHOLD - 1, 1),
        make("bytes", THRESHOLD, 2),
        make("bytes", THRESHOLD + 1, 3),
        bytes(big),
        bytearray(big[: MIB + 5]),
        memoryview(big),
        memoryview(big)[7 : 2 * MIB],  # a contiguous view at an offset
        [bytes(big[:THRESHOLD]), bytearray(big[THRESHOLD : 3 * THRESHOLD])],
        (make("bytes", 200_000, 4), b"small", 5),
        {"a": bytes(big[:MIB]), "b": [bytearray(big[: 2 * THRESHOLD]), 7], "c": "text"},
        {"deep": {"deeper": [bytes(big[:MIB])]}},  # deeper than procpool looks: in band
    ]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("method", ["forkserver", "fork", "spawn"])
def test_large_bytes_like_values_round_trip(
    pools: Callable[..., procpool.Pool], audit: Audit, method: str
) -> None:
    pool = pools(2, method)
    values = bytes_like_values()
    for value in values:
        received, back = pool.apply(roundtrip, (value,))
        assert received == describe(value)
        assert describe(back) == describe(value)
        assert type(back) is type(value)
    # The same through map, several values to a task.
    outcomes = pool.map(roundtrip, values, chunksize=3)
    assert [received for received, _ in outcomes] == [describe(v) for v in values]
    assert [describe(back) for _, back in outcomes] == [describe(v) for v in values]
    del outcomes, received, back
    close_and_check(pool, audit)
    assert_no_segments_left()


@pytest.mark.timeout(60)
def test_a_large_memoryview_keeps_its_format_and_shape(
    pools: Callable[..., procpool.Pool], audit: Audit
) -> None:
    """A memoryview travels out of band as a memoryview: of its items, not of its bytes."""
    pool = pools(1)
    items = memoryview(make("bytes", 2 * MIB, 3)).cast("I")
    grid = memoryview(make("bytes", 2 * MIB, 4)).cast("d", (512, 512))
    for value in (items, grid):
        received, back = pool.apply(roundtrip, (value,))
        assert received == describe(value), "the worker got another format or shape"
        assert (back.format, back.shape) == (value.format, value.shape)
        assert back == value
    del received, back
    close_and_check(pool, audit)
    assert_no_segments_left()


@pytest.mark.timeout(60)
def test_large_arrays_round_trip(pools: Callable[..., procpool.Pool], audit: Audit) -> None:
    np = pytest.importorskip("numpy")
    pool = pools(2)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, size=MIB // 8 * 3, dtype=np.int64)
    values: list[Any] = [
        base.view(dtype)[: MIB // np.dtype(dtype).itemsize]
        for dtype in (np.uint8, np.int16, np.int64, np.float32, np.float64, np.complex128)
    ]
    values += [
        base.view(np.uint8)[:MIB].astype(bool),
        base[: MIB // 8].reshape(256, -1),  # 2-D, C order
        np.asfortranarray(base[: MIB // 8].reshape(256, -1)),  # Fortran order
        base[::2],  # strided: not contiguous
        base[: MIB // 8].reshape(512, -1)[:, ::3],  # 2-D, not contiguous
        base[1000 : 1000 + MIB // 8],  # a view at an offset
        base.view(np.float64)[:10],  # small: in band
        {"x": base[: MIB // 8], "y": [base[MIB // 8 : MIB // 4], (base[:5], 5)]},
        [base[i * 20_000 : (i + 1) * 20_000] for i in range(80)],  # many, in a long list
        {"deep": {"deeper": [{"deepest": base[: MIB // 8]}]}},  # arrays go wherever they are
    ]
    for value in values:
        received, back = pool.apply(roundtrip, (value,))
        assert received == describe(value)
        assert describe(back) == describe(value)
    # A result that is the argument array itself.
    for value in values[:6]:
        assert describe(pool.apply(identity, (value,))) == describe(value)
    del received, back
    close_and_check(pool, audit)
    assert_no_segments_left()


# -- a segment is never written while someone refers to it ------------------------------------

KEPT_KINDS = ["bytes", "bytearray", "memoryview", "np-uint8", "np-float64"]


def needs(kind: str) -> None:
    if kind.startswith("np-"):
        pytest.importorskip("numpy")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["whole", "slice"])
@pytest.mark.parametrize("kind", KEPT_KINDS)
def test_an_argument_kept_by_the_worker_is_never_overwritten(
    pools: Callable[..., procpool.Pool], audit: Audit, kind: str, how: str
) -> None:
    """A task keeps its argument (or a view of part of it) in a global; later tasks of the same
    size, with other contents, must not write into the pages it sees."""
    needs(kind)
    pool = pools(1)
    first = make(kind, 2 * MIB, 0x11)
    assert pool.apply(keep, (first, how)) == describe(first)
    for fill in range(0x20, 0x28):
        value = make(kind, 2 * MIB, fill)
        received, back = pool.apply(roundtrip, (value,))
        assert received == describe(value)
        assert describe(back) == describe(value)
    del received, back
    expected = describe(first if how == "whole" else first[100:200])
    assert pool.apply(kept) == [expected], "the worker's kept argument was overwritten"
    close_and_check(pool, audit)
    assert_no_segments_left()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KEPT_KINDS)
def test_a_result_kept_by_the_caller_is_never_overwritten(
    pools: Callable[..., procpool.Pool], audit: Audit, kind: str
) -> None:
    """The caller keeps a large result (and a slice of another); later results of the same size,
    with other contents, must not write into the pages it sees."""
    needs(kind)
    pool = pools(1)
    first = pool.apply(make, (kind, 2 * MIB, 0x11))
    second = pool.apply(make, (kind, 2 * MIB, 0x12))[100:200]
    expected = [describe(make(kind, 2 * MIB, 0x11)), describe(make(kind, 2 * MIB, 0x12)[100:200])]
    assert [describe(first), describe(second)] == expected
    for fill in range(0x20, 0x28):
        result = pool.apply(make, (kind, 2 * MIB, fill))
        assert describe(result) == describe(make(kind, 2 * MIB, fill))
        del result
        # And the same with results that arrive in a map's list.
        results = pool.map(plus_one, [make(kind, 2 * MIB, fill)] * 2)
        del results
    assert [describe(first), describe(second)] == expected, "a kept result was overwritten"
    del first, second
    close_and_check(pool, audit)
    assert_no_segments_left()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["bytes", "np-uint8"])
def test_segments_are_reused(pools: Callable[..., procpool.Pool], audit: Audit, kind: str) -> None:
    """100 tasks of 1 MiB in, 1 MiB out, results dropped: the same few segments serve them all.

    Each process holds a descriptor of every segment it made and of every segment it mapped (an
    mmap keeps its own), so the distinct memfds seen over the run count the segments made on
    both sides: a handful when they are reused, hundreds when they are not."""
    needs(kind)
    pool = pools(1)
    pid = pool.apply(getpid)
    # Segments of earlier tests that failed live on in their tracebacks: not counted.
    earlier = set(memfd_inodes("self").values())
    seen: dict[str, set[int]] = {"parent": set(), "worker": set()}
    most = {"parent": 0, "worker": 0}
    for i in range(100):
        value = make(kind, MIB, i % 251)
        result = pool.apply(plus_one, (value,))
        assert describe(result) == describe(plus_one(value))
        del result
        for side, fds in (("parent", memfd_inodes("self")), ("worker", memfd_inodes(pid))):
            mine = [inode for inode in fds.values() if inode not in earlier]
            seen[side] |= set(mine)
            most[side] = max(most[side], len(mine))
    # Loose bounds: a release races the next task in the worker (the release is read by its
    # control thread), and a worker that loses the race makes one more segment, kept for reuse.
    # Without reuse there would be a segment per task on each side.
    made = {side: len(inodes) for side, inodes in seen.items()}
    assert made["parent"] <= 30, f"segments seen over 100 tasks: {made}"
    assert made["worker"] <= 30, f"segments seen over 100 tasks: {made}"
    assert most["parent"] <= 40, f"descriptors open at once: {most}"
    assert most["worker"] <= 40, f"descriptors open at once: {most}"
    close_and_check(pool, audit)
    assert_no_segments_left()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("call", ["map", "imap"])
@pytest.mark.parametrize("kind", ["bytes", "np-uint8"])
def test_a_map_over_large_values_reuses_segments_without_mixing_them(
    pools: Callable[..., procpool.Pool], audit: Audit, kind: str, call: str
) -> None:
    """A map submits each task as soon as its large arguments are in segments and reuses the
    segments that come back for the next items, both ways: every item arrives and returns with
    its own contents."""
    needs(kind)
    pool = pools(2)
    values = [make(kind, 4 * MIB, i) for i in range(24)]
    if call == "map":
        outcomes = pool.map(roundtrip, values, chunksize=1)
    else:
        outcomes = list(pool.imap(roundtrip, iter(values)))
    assert [received for received, _ in outcomes] == [describe(v) for v in values]
    assert [describe(back) for _, back in outcomes] == [describe(v) for v in values]
    del outcomes
    close_and_check(pool, audit)
    assert_no_segments_left()


@pytest.mark.timeout(60)
def test_large_arguments_are_sent_while_workers_hold_their_segments(
    pools: Callable[..., procpool.Pool], rendezvous: Rendezvous, audit: Audit
) -> None:
    """The parent waits only a little for segments to come back: tasks that keep theirs (they
    block, their arguments mapped) do not hold up the submission of more large arguments."""
    pool = pools(2)
    held = [
        pool.apply_async(receive_then_block, (rendezvous.address, make("bytes", 2 * MIB, i)))
        for i in range(4)
    ]
    pids = {rendezvous.accept(), rendezvous.accept()}  # both workers hold one, two queued
    values = [make("bytes", 2 * MIB, 0x40 + i) for i in range(8)]
    more = [pool.apply_async(roundtrip, (v,)) for v in values]  # returns while they hold on
    assert len(pids) == 2
    rendezvous.release_all()
    for _ in range(2):  # the two queued behind them
        rendezvous.accept()
    rendezvous.release_all()
    assert [r.get(timeout=WAIT) for r in held] == [
        describe(make("bytes", 2 * MIB, i)) for i in range(4)
    ]
    assert [r.get(timeout=WAIT) for r in more] == [(describe(v), v) for v in values]
    del held, more
    close_and_check(pool, audit)
    assert_no_segments_left()


# -- workers killed around a large transfer ---------------------------------------------------


@pytest.mark.timeout(60)
def test_worker_killed_between_large_transfers(
    pools: Callable[..., procpool.Pool], audit: Audit
) -> None:
    """A worker that received large arguments and sent large results dies while idle: the
    results the caller holds (in its segments) stay intact, and segments it had mapped are sent
    afresh to its replacement."""
    pool = pools(1)
    values = [make("bytes", 2 * MIB, i) for i in range(3)]
    held = [pool.apply(roundtrip, (value,)) for value in values]
    arrays = [pool.apply(make, ("memoryview", 2 * MIB, 0x30 + i)) for i in range(2)]
    [pid] = live_workers(pool, audit)
    os.kill(pid, signal.SIGKILL)
    assert not wait_gone({pid}, WAIT)
    # The segments the dead worker had mapped are reused for its replacement.
    for value in values:
        received, back = pool.apply(roundtrip, (value,))
        assert received == describe(value)
        assert back == value
    assert [describe(a) for a in arrays] == [
        describe(make("memoryview", 2 * MIB, 0x30 + i)) for i in range(2)
    ]
    assert [h[0] for h in held] == [describe(v) for v in values]
    assert [h[1] for h in held] == values
    assert pid not in live_workers(pool, audit)
    still_works(pool)
    del held, arrays, received, back
    close_and_check(pool, audit)
    assert_no_segments_left()


@pytest.mark.timeout(60)
def test_worker_killed_holding_a_large_argument(
    pools: Callable[..., procpool.Pool], rendezvous: Rendezvous, audit: Audit
) -> None:
    """A worker dies while its task holds an 8 MB argument in shared memory: only that task
    fails, and the segment is not reused for anything (nor leaked)."""
    pool = pools(2)
    audit.note(pool)
    values = [make("bytes", 2 * MIB, i) for i in range(6)]
    before = [pool.apply_async(roundtrip, (v,)) for v in values[:3]]
    doomed = pool.apply_async(receive_then_block, (rendezvous.address, make("bytes", 8 * MIB, 9)))
    after = [pool.apply_async(roundtrip, (v,)) for v in values[3:]]
    pid = rendezvous.accept()  # the task runs: its argument has arrived
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerLostError, match=rf"\b{pid}\b.*SIGKILL"):
        doomed.get(timeout=WAIT)
    outcomes = [r.get(timeout=WAIT) for r in before + after]
    assert outcomes == [(describe(v), v) for v in values]
    assert pid not in live_workers(pool, audit)
    still_works(pool)
    del before, after, outcomes, doomed
    close_and_check(pool, audit)
    assert_no_segments_left()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("kind", "size", "grows"),
    [
        # Out of band: the worker copies 200 MB into a new segment (its pages grow), then
        # sends a small frame with the descriptor: it dies while the segment fills.
        ("bytes", 200 * MIB, "worker"),
        # In band: the frame itself is 128 MB; the parent allocates its buffer when the header
        # arrives (its memory grows), then reads the body as the worker sends it.
        ("str", 128 * MIB, "parent"),
    ],
)
def test_worker_killed_while_it_sends_a_large_result(
    pools: Callable[..., procpool.Pool],
    rendezvous: Rendezvous,
    audit: Audit,
    kind: str,
    size: int,
    grows: str,
) -> None:
    """A worker dies while its large result is on its way: the task fails with
    WorkerLostError, the other tasks' results are right, and no partial frame or half-filled
    segment is left behind."""
    pool = pools(2)
    audit.note(pool)
    doomed = pool.apply_async(block_then_return, (rendezvous.address, kind, size, 1))
    pid = rendezvous.accept()  # the value is made; the task waits to return it
    others = [pool.apply_async(roundtrip, (make("bytes", MIB, i),)) for i in range(4)]
    watched = pid if grows == "worker" else "self"
    start = filled(watched)
    rendezvous.release_all()
    # Killed early in the transfer: much of it is still to come, whatever the machine's load.
    wait_for(lambda: filled(watched) >= start + size // 8, "the result is on its way")
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerLostError, match=rf"\b{pid}\b.*SIGKILL"):
        doomed.get(timeout=WAIT)
    assert [r.get(timeout=WAIT) for r in others] == [
        (describe(make("bytes", MIB, i)), make("bytes", MIB, i)) for i in range(4)
    ]
    assert pid not in live_workers(pool, audit)
    still_works(pool)
    del others, doomed
    close_and_check(pool, audit)
    assert_no_segments_left()


# -- a worker frozen mid-transfer --------------------------------------------------------------


def stopped(pid: int) -> bool:
    info = stat(pid)
    return info is not None and info[0] in ("T", "t")


def round_trips(pool: procpool.Pool) -> None:
    """The pool answers while a worker is frozen: small tasks and a large one."""
    for i in range(5):
        assert pool.apply_async(square, (i,)).get(timeout=10) == i * i
    value = make("bytes", 2 * MIB, 5)
    assert pool.apply_async(roundtrip, (value,)).get(timeout=10) == (describe(value), value)


def terminate_quickly(pool: procpool.Pool, audit: Audit, freezer: Freezer) -> None:
    audit.note(pool)
    started = time.monotonic()
    pool.terminate()
    elapsed = time.monotonic() - started
    # A bound on a hang (terminate waiting on a frozen worker), not a speed measurement.
    assert elapsed < 1.0, f"terminate() took {elapsed:.2f} s with a frozen worker"
    pool.join()
    assert not wait_gone(set(freezer.pids), WAIT), "a frozen worker outlived terminate()"
    audit.check()


@pytest.mark.timeout(60)
def test_worker_frozen_while_it_sends_a_large_result(
    pools: Callable[..., procpool.Pool],
    rendezvous3: tuple[Rendezvous, Rendezvous, Rendezvous],
    audit: Audit,
    freezer: Freezer,
) -> None:
    """Two workers stop (SIGSTOP) in the middle of sending 64 MB results (in band: the parent
    holds a partial frame from each): the third worker goes on answering, the deadline of one
    frozen task fires, and terminate() does not wait for the other."""
    ra, rc, _ = rendezvous3
    size = 64 * MIB
    pool = pools(3)
    audit.note(pool)
    stuck = pool.apply_async(block_then_return, (ra.address, "str", size, 1))
    timed = pool.apply_async(block_then_return, (rc.address, "str", size, 2), timeout=4.0)
    pid_a, pid_c = ra.accept(), rc.accept()
    for pid, r in ((pid_a, ra), (pid_c, rc)):
        start = resident("self")
        r.release_all()
        # The parent allocated the frame's buffer: the header is in, the body on its way.
        wait_for(lambda start=start: resident("self") >= start + size // 2, "the result comes")
        freezer.stop(pid)
    round_trips(pool)
    assert stopped(pid_a)
    assert not stuck.ready()
    with pytest.raises(TaskTimeoutError):
        timed.get(timeout=WAIT)
    assert not wait_gone({pid_c}, WAIT)
    assert stopped(pid_a)
    assert not stuck.ready()
    round_trips(pool)
    terminate_quickly(pool, audit, freezer)
    with pytest.raises(PoolTerminatedError):
        stuck.get(timeout=WAIT)
    del stuck, timed
    assert_no_segments_left()


@pytest.mark.timeout(60)
def test_worker_frozen_while_the_parent_sends_a_large_argument(
    pools: Callable[..., procpool.Pool],
    rendezvous3: tuple[Rendezvous, Rendezvous, Rendezvous],
    audit: Audit,
    freezer: Freezer,
) -> None:
    """Two idle workers stop (SIGSTOP), then each is sent a 64 MB argument pickled in band,
    which the socket cannot hold (the scheduler keeps the rest of the frame), and an 8 MB one in
    shared memory (its descriptor already in the socket): the third worker goes on answering,
    the deadline of one frozen task fires, and terminate() does not wait for the other. Both
    die before they have their arguments: nothing of them may be left in the parent."""
    size = 64 * MIB
    pool = pools(3)
    audit.note(pool)
    # Occupy all three workers, so that each task below goes to the one worker let go of.
    holds = [pool.apply_async(block, (r.address, i)) for i, r in enumerate(rendezvous3)]
    pids = [r.accept() for r in rendezvous3]
    results = []
    for i, timeout in ((0, None), (1, 1.5)):
        rendezvous3[i].release_all()
        assert holds[i].get(timeout=WAIT) == i  # that worker is idle now, the others busy
        freezer.stop(pids[i])
        args = ({"text": make("str", size, i), "n": i}, make("bytes", 8 * MIB, i))
        results.append(pool.apply_async(describe_all, args, timeout=timeout))
    stuck, timed = results
    rendezvous3[2].release_all()
    assert holds[2].get(timeout=WAIT) == 2
    round_trips(pool)
    assert stopped(pids[0])
    assert not stuck.ready()
    with pytest.raises(TaskTimeoutError):
        timed.get(timeout=WAIT)
    assert not wait_gone({pids[1]}, WAIT)
    assert stopped(pids[0])
    assert not stuck.ready()
    round_trips(pool)
    terminate_quickly(pool, audit, freezer)
    with pytest.raises(PoolTerminatedError):
        stuck.get(timeout=WAIT)
    del stuck, timed, results
    assert_no_segments_left()
