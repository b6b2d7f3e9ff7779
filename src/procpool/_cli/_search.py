"""The search side of ``procpool grep``: what a worker does with a part of the tree.

It imports little (``os``, ``re`` and the walk), so a worker is ready the moment it starts.
Files are read whole as bytes and searched without decoding: a fixed string with
``bytes.find`` (``-i`` lowers both sides, ASCII only, like grep in the C locale), a regular
expression with ``re`` on bytes. Lines are found around each match, so a file is split into
lines only where it matches.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import NamedTuple

from ._walk import DirJob, Walk

__all__ = ["BINARY_PROBE", "Batch", "Grep", "Outcome", "Searcher", "StepOutcome", "Task"]

# GNU grep decides that a file is binary from a NUL byte in its first buffer (32 KiB).
BINARY_PROBE = 32768

# What a batch yields: (path, output bytes) per file with output, error messages, whether any
# file matched.
Outcome = tuple[list[tuple[str, bytes]], list[str], bool]
Batch = Sequence[str]


class Searcher(NamedTuple):
    """One search, as the options chose it; it travels to the workers with each batch."""

    pattern: bytes
    regex: bool = False  # -E: ``pattern`` is a regular expression (Python's ``re`` syntax)
    ignore_case: bool = False  # -i
    word: bool = False  # -w: the match must stand between non-word characters
    mode: str = "lines"  # "lines" (path:text), "list" (-l) or "count" (-c)
    line_numbers: bool = False  # -n
    text: bool = False  # -a: search binary files too
    prefix: bool = True  # print the file name before each line (several files are searched)
    # Bytes searched at a time: a larger file is searched a block of whole lines at a time, so
    # that memory stays bounded whatever its size (a longer line is cut where a block ends).
    block: int = 1 << 26

    def compile(self) -> re.Pattern[bytes] | None:
        """The regular expression this search needs, or None where ``bytes.find`` will do."""
        several = b"\n" in self.pattern  # as in grep: one pattern a line, any may match
        if not (
            self.regex or self.word or several or (self.ignore_case and not self.pattern.isascii())
        ):
            return None
        translate = _from_grep_syntax if self.regex else re.escape
        source = b"|".join(b"(?:" + translate(p) + b")" for p in self.pattern.split(b"\n"))
        if self.word:
            source = rb"(?<!\w)(?:" + source + rb")(?!\w)"
        flags = re.MULTILINE | (re.IGNORECASE if self.ignore_case else 0)
        return re.compile(source, flags)

    def search_batch(self, paths: Batch, regular: bool = True) -> Outcome:
        """Search each file of ``paths``; an unreadable one becomes an error message.

        ``regular``: the paths are regular files (what a walk finds), whose first short read
        is their end; others (a FIFO named on the command line) are read to their end."""
        compiled = self.compile()
        found: list[tuple[str, bytes]] = []
        errors: list[str] = []
        matched = False
        for path in paths:
            blocks = None
            try:
                blocks = _read(path, self.text, regular, self.block)
                output, hit = self.search_file(path, blocks, compiled)
            except OSError as exc:
                errors.append(f"{path}: {exc.strerror or exc}")
                continue
            finally:
                if isinstance(blocks, Generator):
                    blocks.close()  # -l may stop reading a large file early
            matched |= hit
            if output:
                found.append((path, output))
        return found, errors, matched

    def search_file(
        self, path: str, blocks: Iterable[bytes] | None, compiled: re.Pattern[bytes] | None
    ) -> tuple[bytes, bool]:
        """grep's output for one file, given as blocks of whole lines (None: a binary file,
        skipped), and whether any line matched."""
        name = os.fsencode(path)
        out: list[bytes] = []
        count = lines_before = 0
        for data in blocks or ():
            starts = self._matching_lines(data, compiled)
            if self.mode == "list":
                if next(starts, None) is not None:
                    return name + b"\n", True
            elif self.mode == "count":
                count += sum(1 for _ in starts)
            else:
                out += self._lines(name, data, starts, lines_before)
                if self.line_numbers:
                    lines_before += data.count(b"\n")
        if self.mode == "count":
            return (name + b":" if self.prefix else b"") + str(count).encode() + b"\n", count > 0
        return b"".join(out), bool(out)

    def _matching_lines(self, data: bytes, compiled: re.Pattern[bytes] | None) -> Iterator[int]:
        folded = self.ignore_case and compiled is None
        haystack, needle = (data.lower(), self.pattern.lower()) if folded else (data, self.pattern)
        return _line_starts(data, haystack, needle, compiled)

    def _lines(
        self, name: bytes, data: bytes, starts: Iterator[int], lines_before: int
    ) -> list[bytes]:
        out: list[bytes] = []
        head = name + b":" if self.prefix else b""
        number, counted_to = lines_before + 1, 0
        for start in starts:
            end = data.find(b"\n", start)
            end = len(data) if end < 0 else end
            line_head = head
            if self.line_numbers:
                number += data.count(b"\n", counted_to, start)
                counted_to = start
                line_head += str(number).encode() + b":"
            out += (line_head, data[start:end], b"\n")
        return out


# Bytes in the first read of a file: enough to tell a binary file (and to hold most source
# files whole). A binary file is left after that read, however large it is.
_READ_FIRST = BINARY_PROBE
# Bytes in each later read.
_READ_MORE = 1 << 20


# What grep's expressions write otherwise than Python's: POSIX classes inside brackets, word
# boundaries (C locale: ASCII).
_GREP_SYNTAX = {
    b"[:alpha:]": b"a-zA-Z",
    b"[:digit:]": b"0-9",
    b"[:alnum:]": b"a-zA-Z0-9",
    b"[:upper:]": b"A-Z",
    b"[:lower:]": b"a-z",
    b"[:space:]": b" \\t\\n\\r\\f\\v",
    b"[:blank:]": b" \\t",
    b"[:xdigit:]": b"0-9A-Fa-f",
    b"[:punct:]": re.escape(b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    b"\\<": b"\\b(?=\\w)",
    b"\\>": b"\\b(?<=\\w)",
}


def _from_grep_syntax(pattern: bytes) -> bytes:
    """A grep -E expression in Python's syntax, where the two differ in spelling."""
    for grep_form, python_form in _GREP_SYNTAX.items():
        pattern = pattern.replace(grep_form, python_form)
    return pattern


def _read(path: str, text: bool, regular: bool, block: int) -> Iterable[bytes] | None:
    """A file's contents, in blocks of whole lines; None for a binary file (a NUL byte in its
    first 32 KiB) unless ``text``. One open, one read and one close for most source files."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, _READ_FIRST)
    except BaseException:
        os.close(fd)
        raise
    binary = not text and data.find(b"\0") >= 0
    if binary or (regular and len(data) < _READ_FIRST):
        os.close(fd)
        return None if binary else (data,)
    return _blocks(fd, data, regular, block)


def _blocks(fd: int, data: bytes, regular: bool, block: int) -> Generator[bytes, None, None]:
    """The rest of the file open at ``fd`` (``data`` already read from it), in blocks that end
    at a line's end; closes ``fd`` when done or closed."""
    try:
        parts, size = [data], len(data)
        while chunk := os.read(fd, _READ_MORE):
            parts.append(chunk)
            size += len(chunk)
            if size >= block:
                joined = b"".join(parts)
                start = 0
                while len(joined) - start >= block:
                    cut = joined.rfind(b"\n", start, start + block) + 1 or start + block
                    yield joined[start:cut]
                    start = cut
                parts, size = [joined[start:]], len(joined) - start
            if regular and len(chunk) < _READ_MORE:
                break
        if size:
            yield b"".join(parts)
    finally:
        os.close(fd)


def _line_starts(
    data: bytes, haystack: bytes, needle: bytes, compiled: re.Pattern[bytes] | None
) -> Iterator[int]:
    """The start of each line that matches, in order; each line once.

    ``haystack`` is ``data`` or its lowered copy (same length) where ``needle`` is searched
    without a regular expression."""
    size = len(data)
    position = 0
    while position < size:
        if compiled is None:
            hit = _find(haystack, needle, position)
            if hit < 0:
                return
        else:
            match = compiled.search(data, position)
            if match is None:
                return
            hit = match.start()
        start = data.rfind(b"\n", 0, hit) + 1
        end = data.find(b"\n", hit)
        end = size if end < 0 else end
        if start == size:
            return  # a match at the very end, after the last newline: no line holds it
        # A regular expression may match across a newline (``\s``, ``[^x]``); grep matches
        # within lines, so the line is checked on its own.
        if compiled is None or compiled.search(data, start, end) is not None:
            yield start
        position = end + 1


# A step of a search: files to search and directories to walk; what comes back adds the
# directories the step did not reach.
Task = tuple[list[str], list[DirJob]]
StepOutcome = tuple[list[tuple[str, bytes]], list[str], bool, list[DirJob]]


class Grep(NamedTuple):
    """A whole search: what to look for and where. Workers run it one :meth:`step` at a time."""

    searcher: Searcher
    walk: Walk
    budget: int = 1024  # files (or directories) a step walks before it hands the rest back

    def step(self, task: Task) -> StepOutcome:
        """Search ``task``'s files and walk its directories for up to a budget of files more."""
        files, stack = task
        errors: list[str] = []
        files = files + self.walk.explore(stack, self.budget, errors.append)
        found, search_errors, matched = self.searcher.search_batch(files)
        return found, errors + search_errors, matched, stack


# From this many bytes on, a fixed string is searched with the C library's memmem, twice as
# fast as bytes.find on source code (glibc 2.36: 3.3 against 1.6 GB/s for "Pool" on Python's
# standard library), which makes up for the cost of a call through ctypes.
_MEMMEM_FROM = 4096


def _find(haystack: bytes, needle: bytes, start: int) -> int:
    """``haystack.find(needle, start)``, with memmem where it pays."""
    if needle and len(haystack) - start >= _MEMMEM_FROM:
        memmem_find = _memmem_find()
        if memmem_find is not None:
            return memmem_find(haystack, needle, start)
    return haystack.find(needle, start)


@functools.cache
def _memmem_find() -> Callable[[bytes, bytes, int], int] | None:
    """A ``find`` on the C library's memmem, or None where there is none. ctypes is
    imported here, by the first large file, not by every run of the command."""
    import ctypes

    try:
        memmem = ctypes.CDLL(None).memmem
    except (OSError, AttributeError):
        return None
    memmem.restype = ctypes.c_void_p
    memmem.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    address = ctypes.c_void_p

    def find(haystack: bytes, needle: bytes, start: int) -> int:
        base: int = ctypes.cast(ctypes.c_char_p(haystack), address).value  # type: ignore[assignment]
        found = memmem(base + start, len(haystack) - start, needle, len(needle))
        return -1 if found is None else found - base

    return find
