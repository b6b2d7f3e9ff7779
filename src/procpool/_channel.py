"""Framed messages over a Unix stream socket, with file descriptors riding along.

Every message is a frame: an 11-byte header (body length, kind, number of descriptors) and the
body. Descriptors (the shared-memory segments of large buffers) travel as ``SCM_RIGHTS``
ancillary data attached to the bytes of their frame, so they arrive no later than the frame's
header; the reader keeps them in arrival order and hands each frame the ones it announced.

The same class serves both ends. The scheduler's end is non-blocking: it reads whatever has
arrived and keeps partial frames, and it queues what it writes and sends as much as the socket
takes, so one worker frozen in the middle of a frame, or sending a gigabyte, never holds up the
scheduler. A worker's end is blocking and simple.

This module is imported by workers: it uses the standard library only.
"""

from __future__ import annotations

import array
import mmap
import os
import socket
import struct
from collections import deque
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["Channel", "Frame", "Tag"]

# What a frame is tagged with: the ids of the tasks it carries (None: no tasks).
Tag = tuple[int, ...] | None

_HEADER = struct.Struct("!QBH")  # body length, kind, descriptors sent with the frame

# Bytes read per system call; a frame larger than this is read straight into a buffer of its
# own, never copied through this one.
_READ_SIZE = 256 * 1024
# The kernel passes at most 253 descriptors in one message (SCM_MAX_FD).
_MAX_FDS = 253
_ANCILLARY_SPACE = socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)
# Pieces handed to one sendmsg call (far below the kernel's IOV_MAX).
_MAX_PIECES = 64
# A body smaller than this is copied behind its header: one piece instead of two.
_JOIN_BELOW = 64 * 1024


class Frame(NamedTuple):
    """One message: its kind (one byte), its body and the descriptors that came with it."""

    kind: int
    body: memoryview
    fds: list[int]


class Channel:
    """One end of a framed socket. ``blocking`` chooses how reads and writes wait."""

    def __init__(self, sock: socket.socket, blocking: bool) -> None:
        self.sock = sock
        sock.setblocking(blocking)
        self._blocking = blocking
        # Reading: a buffer with the unparsed bytes in [start, end), descriptors in arrival order.
        # Anonymous memory, whose pages are only touched as bytes arrive: a new channel (two for
        # each worker, on either side) costs no page faults for the bytes it never reads.
        self._buffer = mmap.mmap(-1, _READ_SIZE)
        self._start = 0
        self._end = 0
        self._fds: deque[int] = deque()
        self._flags = 0  # recvmsg flags of the receive() under way
        # A large frame being read into its own buffer: (kind, descriptors wanted, body, filled).
        self._large: tuple[int, int, bytearray, int] | None = None
        # Writing: pieces not yet sent, each with the descriptors to send with its first byte and,
        # on a frame's last piece, the frame's tag.
        self._out: deque[tuple[memoryview, list[int], Tag]] = deque()

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        """Close the socket and every descriptor received but not handed out."""
        while self._fds:
            _close(self._fds.popleft())
        for _, fds, _tag in self._out:
            for fd in fds:
                _close(fd)
        self._out.clear()
        self.sock.close()

    # -- writing ------------------------------------------------------------------------------

    def queue(
        self,
        kind: int,
        parts: Sequence[bytes | memoryview] = (),
        fds: Sequence[int] = (),
        tag: Tag = None,
    ) -> None:
        """Add a frame whose body is ``parts`` (joined) to the outgoing queue. The descriptors
        are duplicated here, so the caller keeps its own; the copies are closed once sent.
        ``tag``: named by :meth:`unsent` while the frame is not wholly sent."""
        if len(fds) > _MAX_FDS:
            raise ValueError(f"a frame can carry at most {_MAX_FDS} descriptors")
        sizes = [memoryview(part).nbytes for part in parts]
        header = _HEADER.pack(sum(sizes), kind, len(fds))
        copies = [os.dup(fd) for fd in fds]
        if sum(sizes) < _JOIN_BELOW:
            self._out.append((memoryview(b"".join([header, *parts])), copies, tag))
            return
        pieces = [
            memoryview(part).cast("B") for part, size in zip(parts, sizes, strict=True) if size
        ]
        self._out.append((memoryview(header), copies, None))
        for i, piece in enumerate(pieces):
            self._out.append((piece, [], tag if i == len(pieces) - 1 else None))

    def unsent(self) -> list[tuple[int, ...]]:
        """The tags of the queued frames not wholly sent (the other end never got them)."""
        return [tag for _, _, tag in self._out if tag is not None]

    @property
    def pending(self) -> bool:
        """Whether queued bytes wait for the socket to take them."""
        return bool(self._out)

    def flush(self) -> bool:
        """Send what is queued: all of it when blocking, else what the socket takes now.

        Returns True once nothing is left. Raises OSError when the other end is gone.
        """
        while self._out:
            pieces: list[memoryview] = []
            fds: list[int] = []
            for piece, piece_fds, _tag in self._out:
                if len(pieces) == _MAX_PIECES or len(fds) + len(piece_fds) > _MAX_FDS:
                    break
                pieces.append(piece)
                fds.extend(piece_fds)
            ancillary = (
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            )
            try:
                sent = self.sock.sendmsg(pieces, ancillary)
            except BlockingIOError:
                return False
            # Descriptors go with the first byte sent: from here on the kernel holds them.
            for fd in fds:
                _close(fd)
            self._consume(sent, len(pieces))
        return True

    def _consume(self, sent: int, count: int) -> None:
        """Drop what one sendmsg call took; its descriptors all went with its first byte."""
        for i in range(count):
            piece, fds, tag = self._out[i]
            if fds:
                self._out[i] = (piece, [], tag)
        while sent:
            piece, _, tag = self._out[0]
            if sent >= len(piece):
                sent -= len(piece)
                self._out.popleft()
            else:
                self._out[0] = (piece[sent:], [], tag)
                sent = 0

    def send(
        self, kind: int, parts: Sequence[bytes | memoryview] = (), fds: Sequence[int] = ()
    ) -> None:
        """Queue a frame and flush (a worker's end: blocks until it is sent)."""
        self.queue(kind, parts, fds)
        self.flush()

    # -- reading ------------------------------------------------------------------------------

    def receive(self, wait: bool = True) -> list[Frame]:
        """The frames that have arrived: at least one when blocking and ``wait``, maybe none
        otherwise.

        Raises EOFError when the other end has closed (after every whole frame was returned).
        """
        self._flags = 0 if wait or not self._blocking else socket.MSG_DONTWAIT
        frames: list[Frame] = []
        while True:
            if self._large is None:
                self._parse(frames)
            if frames:
                return frames
            try:
                got = self._read(frames)
            except BlockingIOError:
                return frames
            if not got:
                raise EOFError("the other end closed the channel")

    def _read(self, frames: list[Frame]) -> int:
        if self._large is not None:
            kind, nfds, body, filled = self._large
            got = self._recv(memoryview(body)[filled:])
            filled += got
            if filled == len(body):
                self._large = None
                frames.append(self._frame(kind, nfds, body))
            else:
                self._large = (kind, nfds, body, filled)
            return got
        if self._start == self._end:
            self._start = self._end = 0
        elif len(self._buffer) - self._end < _HEADER.size:
            self._compact()
        return self._recv(memoryview(self._buffer)[self._end :], advance=True)

    def _recv(self, into: memoryview, advance: bool = False) -> int:
        got, ancillary, flags, _ = self.sock.recvmsg_into([into], _ANCILLARY_SPACE, self._flags)
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                self._fds.extend(fds)
        if flags & socket.MSG_CTRUNC:
            raise OSError("descriptors were lost in transit (ancillary data truncated)")
        if advance:
            self._end += got
        return got

    def _compact(self) -> None:
        kept = self._end - self._start
        self._buffer[:kept] = self._buffer[self._start : self._end]
        self._start, self._end = 0, kept

    def _parse(self, frames: list[Frame]) -> None:
        while self._end - self._start >= _HEADER.size:
            length, kind, nfds = _HEADER.unpack_from(self._buffer, self._start)
            begin = self._start + _HEADER.size
            if self._end - begin >= length:
                body = bytes(self._buffer[begin : begin + length])
                self._start = begin + length
                frames.append(self._frame(kind, nfds, body))
                continue
            if length + _HEADER.size > len(self._buffer):
                # Too large for the shared buffer: read the rest straight into its own.
                large = bytearray(length)
                have = self._end - begin
                large[:have] = self._buffer[begin : self._end]
                self._start = self._end = 0
                self._large = (kind, nfds, large, have)
            elif self._start:
                self._compact()
            return

    def _frame(self, kind: int, nfds: int, body: bytes | bytearray) -> Frame:
        fds = [self._fds.popleft() for _ in range(nfds)]
        return Frame(kind, memoryview(body), fds)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
