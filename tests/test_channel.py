"""The framed channel on its own: a real ``socket.socketpair()``, no processes.

Both ends are exercised the way procpool uses them: the scheduler's end is non-blocking (partial
frames kept, writes queued and flushed as the socket takes them), a worker's end is blocking. A
stream of frames must come out the same however the kernel cuts it, descriptors must reach the
frame that announced them, and nothing (bytes or descriptors) may be lost or leaked at EOF or on
close.

Single-threaded where possible: a non-blocking writer and a non-blocking reader are pumped in
turn, so nothing here waits on a clock. Where a blocking end needs its own thread, every wait is
bounded.
"""

from __future__ import annotations

import array
import itertools
import os
import random
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from procpool._channel import _HEADER, _JOIN_BELOW, _MAX_FDS, _READ_SIZE, Channel, Frame

pytestmark = pytest.mark.timeout(60)

WAIT = 30.0
HEADER = 11  # the documented wire format: body length (8), kind (1), descriptor count (2)

# Sizes around every threshold of the channel: empty, tiny, the join threshold (a body below it is
# copied behind its header), the read buffer (a frame that does not fit is read into its own
# buffer), and several megabytes.
SIZES = [
    0,
    1,
    2,
    HEADER - 1,
    HEADER,
    HEADER + 1,
    1000,
    _JOIN_BELOW - 1,
    _JOIN_BELOW,
    _JOIN_BELOW + 1,
    _READ_SIZE - HEADER - 1,
    _READ_SIZE - HEADER,
    _READ_SIZE - HEADER + 1,
    _READ_SIZE,
    _READ_SIZE + 1,
    3 * 2**20 + 7,
]


# -- helpers ---------------------------------------------------------------------------------------


def body(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def pump(writer: Channel, reader: Channel, count: int) -> list[Frame]:
    """Move ``count`` frames from a non-blocking writer to a reader, in one thread: flush what
    the socket takes, read what arrived, again, until every frame is in."""
    frames: list[Frame] = []
    idle = 0
    while len(frames) < count:
        flushed = writer.flush()
        got = reader.receive(wait=False)
        frames += got
        idle = 0 if got or not flushed else idle + 1
        assert idle < 1000, f"no progress: {len(frames)} of {count} frames arrived"
    assert writer.flush()
    assert not writer.pending
    assert reader.receive(wait=False) == []
    return frames


def encode(frames: Sequence[tuple[int, bytes]]) -> bytes:
    """The bytes a Channel writes for these frames (no descriptors)."""
    a, b = socket.socketpair()
    with a, b:
        writer = Channel(a, blocking=False)
        b.setblocking(False)
        for kind, data in frames:
            writer.queue(kind, [data])
        chunks = []
        while True:
            flushed = writer.flush()
            while True:
                try:
                    chunk = b.recv(1 << 20)
                except BlockingIOError:
                    break
                chunks.append(chunk)
            if flushed:
                break
    return b"".join(chunks)


def read_cut(stream: bytes, cuts: Sequence[int], blocking_reader: bool = False) -> list[Frame]:
    """Write ``stream`` in the pieces between ``cuts``, and read with a channel until it has
    consumed every byte written before writing the next piece: at each cut the reader has seen
    exactly the stream up to it. (A piece larger than the socket takes is cut further.)"""
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        reader = Channel(b, blocking=blocking_reader)
        frames: list[Frame] = []
        bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(stream))), len(stream)]
        for start, end in itertools.pairwise(bounds):
            piece = memoryview(stream)[start:end]
            while True:
                try:
                    piece = piece[a.send(piece) :]
                except BlockingIOError:
                    pass
                got = reader.receive(wait=False)
                frames += got
                if not piece and not got:
                    break  # all written and all read
        a.shutdown(socket.SHUT_WR)
        assert read_to_eof(reader) == [], "a frame arrived after the last byte was read"
        reader.close()
    return frames


def read_to_eof(reader: Channel, select_first: bool = False) -> list[Frame]:
    """The frames a channel returns until it raises EOFError (``select_first``: wait for the
    socket to be readable before each read, as the scheduler does)."""
    frames: list[Frame] = []
    while True:
        if select_first:
            assert select.select([reader], [], [], WAIT)[0], "neither data nor EOF came"
        try:
            frames += reader.receive()
        except EOFError:
            return frames


def as_pairs(frames: Sequence[Frame]) -> list[tuple[int, bytes]]:
    return [(f.kind, bytes(f.body)) for f in frames]


def boundaries(frames: Sequence[tuple[int, bytes]]) -> list[int]:
    """Stream offsets where the parser's state changes: each frame's start, the end of its header,
    its end, and each multiple of the read buffer's size."""
    offsets = []
    position = 0
    for _, data in frames:
        offsets += [position, position + HEADER, position + HEADER + len(data)]
        position += HEADER + len(data)
    offsets += range(_READ_SIZE, position, _READ_SIZE)
    return offsets


def near(offsets: Sequence[int], width: int) -> list[int]:
    return sorted({o + d for o in offsets for d in range(-width, width + 1)})


# -- the wire format -------------------------------------------------------------------------------


def test_wire_format_is_an_11_byte_header_then_the_body() -> None:
    assert _HEADER.size == HEADER
    frames = [(ord("T"), b"hello"), (ord("S"), b""), (ord("D"), body(_JOIN_BELOW + 5, 1))]
    expected = b"".join(struct.pack("!QBH", len(d), k, 0) + d for k, d in frames)
    assert encode(frames) == expected


# -- frames of every size --------------------------------------------------------------------------


@pytest.mark.parametrize("reader_blocking", [False, True], ids=["nonblocking", "blocking"])
def test_frames_of_every_size_round_trip(
    pair: tuple[socket.socket, socket.socket], reader_blocking: bool
) -> None:
    a, b = pair
    writer = Channel(a, blocking=False)
    reader = Channel(b, blocking=reader_blocking)
    sent = [(i % 256, body(size, i)) for i, size in enumerate(SIZES)]
    for kind, data in sent:
        writer.queue(kind, [data])
    assert as_pairs(pump(writer, reader, len(sent))) == sent


def test_a_body_in_several_parts_of_several_types(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """``parts`` are joined: bytes, bytearrays, memoryviews (of other formats too), empty ones."""
    a, b = pair
    writer = Channel(a, blocking=False)
    reader = Channel(b, blocking=False)
    sent = []
    for size in (10, _JOIN_BELOW // 2, _READ_SIZE + 3, 2**20):
        doubles = array.array("d", range(size // 8))
        parts: list[Any] = [
            body(size, 1),
            b"",
            bytearray(body(size // 3, 2)),
            memoryview(doubles),
            memoryview(body(size, 3))[5:],
            b"",
        ]
        sent.append(b"".join(bytes(memoryview(p)) for p in parts))
        writer.queue(ord("D"), parts)
    frames = pump(writer, reader, len(sent))
    assert [bytes(f.body) for f in frames] == sent


@pytest.mark.parametrize("direction", ["to_worker", "to_scheduler"])
def test_a_blocking_end_and_a_nonblocking_end(
    pair: tuple[socket.socket, socket.socket], direction: str
) -> None:
    """As procpool uses them: the scheduler's non-blocking end (in this thread, waiting with
    select) and a worker's blocking end (in a thread of its own)."""
    a, b = pair
    sent = [(i % 256, body(size, i)) for i, size in enumerate(SIZES * 2)]
    received: list[Frame] = []
    errors: list[BaseException] = []

    def worker() -> None:
        channel = Channel(b, blocking=True)
        try:
            if direction == "to_worker":
                while len(received) < len(sent):
                    received.extend(channel.receive())
            else:
                for kind, data in sent:
                    channel.send(kind, [data])
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=worker, daemon=True)
    b.settimeout(WAIT)  # the worker's end blocks, but never forever
    thread.start()
    scheduler = Channel(a, blocking=False)
    if direction == "to_worker":
        for kind, data in sent:
            scheduler.queue(kind, [data])
        while not scheduler.flush():
            assert select.select([], [scheduler], [], WAIT)[1], "the socket never drained"
    else:
        while len(received) < len(sent):
            assert select.select([scheduler], [], [], WAIT)[0], "nothing arrived"
            received.extend(scheduler.receive())
    thread.join(WAIT)
    assert not thread.is_alive()
    assert not errors, errors
    assert as_pairs(received) == sent


# -- however the stream is cut ---------------------------------------------------------------------

SMALL_FRAMES = [(k, body(n, k)) for k, n in enumerate([0, 1, 0, 5, HEADER, 0, 100, 2, 300, 0])]
# A frame that fits the read buffer behind another, a frame larger than the read buffer, and a
# frame that exactly fills it: the buffer is compacted, bypassed and filled to the last byte.
LARGE_FRAMES = [
    (1, body(100, 1)),
    (2, body(_READ_SIZE // 2, 2)),
    (3, body(_READ_SIZE // 2 + 1000, 3)),
    (4, b""),
    (5, body(_READ_SIZE + 5000, 5)),
    (6, body(7, 6)),
    (7, body(_READ_SIZE - HEADER, 7)),
    (8, body(_JOIN_BELOW, 8)),
    (9, b""),
]


@pytest.mark.parametrize("reader_blocking", [False, True], ids=["nonblocking", "blocking"])
def test_written_one_byte_at_a_time(reader_blocking: bool) -> None:
    stream = encode(SMALL_FRAMES)
    cuts = range(1, len(stream))
    assert as_pairs(read_cut(stream, cuts, reader_blocking)) == SMALL_FRAMES


def test_split_in_two_at_every_offset() -> None:
    stream = encode(SMALL_FRAMES)
    for offset in range(len(stream) + 1):
        assert as_pairs(read_cut(stream, [offset])) == SMALL_FRAMES, f"split at {offset}"


def test_large_frames_split_in_two_at_every_offset_near_a_boundary() -> None:
    """Every offset of a megabyte stream would take minutes; the parser's state only changes
    near these offsets (a header starts, ends, a body ends, the read buffer is full)."""
    stream = encode(LARGE_FRAMES)
    for offset in near(boundaries(LARGE_FRAMES), 12):
        assert as_pairs(read_cut(stream, [offset])) == LARGE_FRAMES, f"split at {offset}"


def test_large_frames_written_byte_by_byte_near_every_boundary() -> None:
    """One byte at a time around every frame boundary and every multiple of the read buffer,
    in large pieces in between."""
    stream = encode(LARGE_FRAMES)
    assert as_pairs(read_cut(stream, near(boundaries(LARGE_FRAMES), 24))) == LARGE_FRAMES


@pytest.mark.parametrize("chunk", [97, 1000, 4093, 65537, _READ_SIZE - 1, _READ_SIZE + 7])
def test_written_in_pieces_of_awkward_sizes(chunk: int) -> None:
    frames = LARGE_FRAMES * 2 + SMALL_FRAMES * 3
    stream = encode(frames)
    assert as_pairs(read_cut(stream, range(chunk, len(stream), chunk))) == frames


# -- descriptors -----------------------------------------------------------------------------------


def memfd(content: bytes) -> int:
    fd = os.memfd_create("test-channel")
    os.write(fd, content)
    return fd


def same_file(a: int, b: int) -> bool:
    sa, sb = os.fstat(a), os.fstat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def check_descriptors(
    make_writer: Callable[[socket.socket], Channel], frames_spec: Sequence[tuple[int, int]]
) -> None:
    """Send frames of (body size, descriptor count); each descriptor is a memfd naming its frame
    and slot, or a pipe's end; check each frame gets its own."""
    before = fd_count()
    a, b = socket.socketpair()
    writer = make_writer(a)
    reader = Channel(b, blocking=False)
    originals: list[list[int]] = []
    pipes: list[int] = []
    for i, (size, nfds) in enumerate(frames_spec):
        fds = []
        for j in range(nfds):
            if j % 3 == 2:
                r, w = os.pipe()
                pipes.append(w)
                fds.append(r)
            else:
                fds.append(memfd(f"frame {i} fd {j}".encode()))
        originals.append(fds)
        writer.queue(i % 256, [body(size, i)], fds)
    frames = pump(writer, reader, len(frames_spec))
    try:
        assert [len(f.body) for f in frames] == [size for size, _ in frames_spec]
        for i, (frame, fds) in enumerate(zip(frames, originals, strict=True)):
            assert bytes(frame.body) == body(frames_spec[i][0], i)
            assert len(frame.fds) == len(fds), f"frame {i}"
            for j, (got, original) in enumerate(zip(frame.fds, fds, strict=True)):
                assert got != original
                assert same_file(got, original), f"frame {i} descriptor {j}"
                if j % 3 != 2:
                    assert os.pread(got, 64, 0) == f"frame {i} fd {j}".encode()
    finally:
        for frame in frames:
            for fd in frame.fds:
                os.close(fd)
        for fd in [*pipes, *(fd for fds in originals for fd in fds)]:
            os.close(fd)
        writer.close()
        reader.close()
    assert fd_count() == before, "descriptors leaked"


def test_descriptors_travel_with_their_frame() -> None:
    spec = [
        (10, 1),
        (0, 0),
        (0, 2),  # an empty body with descriptors
        (100, 0),
        (_JOIN_BELOW, 3),
        (_READ_SIZE + 100, 2),  # read into a buffer of its own
        (5, 0),
        (2 * 2**20, 4),
        (0, 0),
        (1, 1),
    ]
    check_descriptors(lambda sock: Channel(sock, blocking=False), spec)


def test_more_descriptors_than_one_message_carries() -> None:
    """Frames whose descriptors together exceed what one sendmsg carries (253), and one frame
    with the most a frame may carry."""
    spec = [(i * 37, 3 + i % 5) for i in range(80)] + [(7, _MAX_FDS), (0, 0), (3, 1)]
    check_descriptors(lambda sock: Channel(sock, blocking=False), spec)


def test_descriptors_survive_small_socket_buffers() -> None:
    """With tiny socket buffers every frame is cut in many sendmsg calls: a frame's descriptors
    may then ride with an earlier frame's bytes, and must still reach their own frame."""

    def small(sock: socket.socket) -> Channel:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return Channel(sock, blocking=False)

    spec = [(0, 1), (3000, 0), (5000, 2), (100, 1), (_READ_SIZE + 1, 3), (0, 0), (9000, 1)] * 4
    check_descriptors(small, spec)


def test_too_many_descriptors_for_one_frame(pair: tuple[socket.socket, socket.socket]) -> None:
    channel = Channel(pair[0], blocking=False)
    before = fd_count()
    with pytest.raises(ValueError, match="at most"):
        channel.queue(1, [b"x"], [0] * (_MAX_FDS + 1))
    assert fd_count() == before
    assert not channel.pending


# -- EOF -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reader_blocking", [False, True], ids=["nonblocking", "blocking"])
@pytest.mark.parametrize(
    "cut", ["at_a_boundary", "mid_header", "header_only", "mid_small_body", "mid_large_body"]
)
def test_eof_mid_frame_raises_after_the_whole_frames(cut: str, reader_blocking: bool) -> None:
    whole = [(1, body(50, 1)), (2, b""), (3, body(_READ_SIZE + 10, 3))]
    # The partial frame announces a descriptor, sent with its first bytes: the channel must
    # close it, as nobody ever gets it.
    small, large = body(1000, 4), body(_READ_SIZE * 3, 5)
    partial = {
        "at_a_boundary": b"",
        "mid_header": (_HEADER.pack(len(small), 4, 1) + small)[:5],
        "header_only": _HEADER.pack(len(large), 5, 1),
        "mid_small_body": (_HEADER.pack(len(small), 4, 1) + small)[:500],
        "mid_large_body": (_HEADER.pack(len(large), 5, 1) + large)[: _READ_SIZE * 2],
    }[cut]
    before = fd_count()
    a, b = socket.socketpair()
    reader = Channel(b, blocking=reader_blocking)
    b.settimeout(WAIT) if reader_blocking else None

    def write() -> None:
        with a:
            a.sendall(encode(whole))
            if partial:
                fd = memfd(b"partial")
                try:
                    a.sendmsg(
                        [partial], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
                    )
                finally:
                    os.close(fd)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    frames = read_to_eof(reader, select_first=not reader_blocking)
    writer.join(WAIT)
    assert not writer.is_alive()
    assert as_pairs(frames) == whole
    with pytest.raises(EOFError):
        reader.receive()  # and again: the end stays the end
    reader.close()
    assert fd_count() == before, "descriptors leaked"


# -- close() ---------------------------------------------------------------------------------------


def test_close_closes_descriptors_received_but_not_handed_out() -> None:
    before = fd_count()
    a, b = socket.socketpair()
    writer = Channel(a, blocking=True)
    reader = Channel(b, blocking=False)
    handed = [memfd(b"handed out")]
    kept = [memfd(b"kept") for _ in range(5)]
    writer.send(1, [b"whole"], handed)
    # A frame whose header and descriptors arrive, but not the whole body.
    header = _HEADER.pack(_READ_SIZE * 2, 2, len(kept))
    a.sendmsg(
        [header + body(1000, 2)],
        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", kept))],
    )
    for fd in [*handed, *kept]:
        os.close(fd)
    frames = reader.receive()
    assert as_pairs(frames) == [(1, b"whole")]
    assert reader.receive(wait=False) == []  # the partial frame waits for its body
    [mine] = frames[0].fds
    assert fd_count() == before + 2 + 1 + len(kept)  # sockets, the frame's, the partial frame's
    reader.close()
    writer.close()
    assert fd_count() == before + 1, "close() left received descriptors open"
    assert os.pread(mine, 100, 0) == b"handed out", "close() closed a descriptor handed out"
    os.close(mine)
    assert fd_count() == before


def test_close_closes_descriptors_queued_but_not_sent(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, _ = pair
    writer = Channel(a, blocking=False)
    before = fd_count()
    writer.queue(1, [body(8 * 2**20, 1)])  # far more than the socket takes
    assert not writer.flush()
    fds = [memfd(b"x") for _ in range(4)]
    writer.queue(2, [b"small"], fds[:1])
    writer.queue(3, [body(2**20, 3)], fds[1:])
    assert not writer.flush()  # the socket is still full: nothing more went
    for fd in fds:
        os.close(fd)  # the channel holds copies until they are sent
    assert fd_count() == before + len(fds)
    writer.close()
    assert fd_count() == before - 1, "close() left queued descriptors open"  # and its socket


# -- non-blocking writes ---------------------------------------------------------------------------


def test_flush_on_a_full_socket_returns_false_and_finishes_later(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    writer = Channel(a, blocking=False)
    reader = Channel(b, blocking=False)
    sent = [(1, body(4 * 2**20, 1)), (2, b"after"), (3, body(_READ_SIZE * 3, 3))]
    for kind, data in sent:
        writer.queue(kind, [data])
    assert writer.flush() is False
    assert writer.pending
    assert writer.flush() is False  # nothing read: still full, and no error
    frames: list[Frame] = []
    rounds = 0
    while writer.pending:
        frames += reader.receive(wait=False)
        writer.flush()
        rounds += 1
        assert rounds < 100_000
    assert writer.flush() is True
    while len(frames) < len(sent):
        got = reader.receive(wait=False)
        assert got
        frames += got
    assert as_pairs(frames) == sent


KINDS = {"first": 1, "big": 3, "small": 4, "parts": 5}


def test_unsent_names_the_tags_of_frames_not_wholly_sent(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    writer = Channel(a, blocking=False)
    reader = Channel(b, blocking=False)
    big = body(4 * 2**20, 1)
    writer.queue(1, [b"first"], tag="first")
    writer.queue(2, [b"untagged"])
    writer.queue(3, [big], tag="big")
    writer.queue(4, [b"x" * 10], tag="small")
    writer.queue(5, [big[: 2**20], big[2**20 :]], tag="parts")
    assert writer.unsent() == ["first", "big", "small", "parts"]
    assert not writer.flush()
    # The first frames went whole; the big one is cut somewhere in its body.
    assert writer.unsent() == ["big", "small", "parts"]
    frames: list[Frame] = []
    seen = []
    while writer.pending:
        frames += reader.receive(wait=False)
        writer.flush()
        tags = writer.unsent()
        if not seen or seen[-1] != tags:
            seen.append(tags)
        # A frame named is not wholly sent, so it cannot have arrived; and frames go in order.
        assert not {KINDS[t] for t in tags} & {f.kind for f in frames}
        assert tags == ["big", "small", "parts"][3 - len(tags) :]
    assert writer.unsent() == []
    assert seen[-1] == []
    assert ["small", "parts"] in seen or ["parts"] in seen
    while len(frames) < 5:
        frames += reader.receive(wait=False)
    assert [f.kind for f in frames] == [1, 2, 3, 4, 5]


def test_flush_raises_when_the_other_end_is_gone_and_unsent_says_what_was_lost(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    writer = Channel(a, blocking=False)
    writer.queue(1, [b"sent"], tag=(1,))
    writer.queue(2, [body(4 * 2**20, 2)], tag=(2,))
    writer.queue(3, [b"never"], tag=(3,))
    assert not writer.flush()
    b.close()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        writer.flush()
    assert writer.unsent() == [(2,), (3,)]
    writer.close()


def test_receive_without_data(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    assert Channel(b, blocking=False).receive() == []
    blocking = Channel(a, blocking=True)
    assert blocking.receive(wait=False) == []
