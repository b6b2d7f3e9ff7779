"""The parts of ``procpool grep`` that need no processes: the walk's .gitignore rules and
globs, the search of large files in blocks, the memmem-based find."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from procpool._cli._search import Searcher, _find
from procpool._cli._walk import GitIgnore, Walk


@pytest.mark.parametrize(
    ("rules", "path", "is_dir", "ignored"),
    [
        ("*.log", "a.log", False, True),
        ("*.log", "deep/er/a.log", False, True),  # no slash: any depth
        ("*.log", "a.logx", False, None),
        ("/top.txt", "top.txt", False, True),  # a leading slash anchors
        ("/top.txt", "sub/top.txt", False, None),
        ("doc/*.md", "doc/a.md", False, True),  # a middle slash anchors too
        ("doc/*.md", "x/doc/a.md", False, None),
        ("doc/*.md", "doc/sub/a.md", False, None),  # * stops at /
        ("build/", "build", True, True),  # a trailing slash: directories only
        ("build/", "build", False, None),
        ("**/cache", "a/b/cache", True, True),
        ("a/**/b", "a/b", False, True),
        ("a/**/b", "a/x/y/b", False, True),
        ("logs/**", "logs/x/y.txt", False, True),
        ("*.log\n!keep.log", "keep.log", False, False),  # the last matching rule decides
        ("!keep.log\n*.log", "keep.log", False, True),
        ("file[0-9].txt", "file7.txt", False, True),
        ("file[!0-9].txt", "file7.txt", False, None),
        ("\\#hash", "#hash", False, True),  # an escaped # is a name, not a comment
        ("# comment\n\n", "# comment", False, None),
        ("trailing\\ ", "trailing ", False, True),  # an escaped trailing space stays
        ("spaces   ", "spaces", False, True),  # unescaped trailing spaces go
    ],
)
def test_gitignore_rules(rules: str, path: str, is_dir: bool, ignored: bool | None) -> None:
    assert GitIgnore(rules).decide(path, is_dir) is ignored


def test_globs_include_by_name_and_exclude_files_and_directories(tmp_path: Path) -> None:
    root = tmp_path
    for name in ["a.py", "b.txt", "c.PY", "skip/d.py", "keep/e.py", "keep/f.md"]:
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_text("x")
    walk = Walk(globs=["*.py", "*.md", "!skip"])
    files, others, stack = walk.start([str(root)], pytest.fail)
    found = walk.explore(stack, 100, pytest.fail)
    assert (files, others, stack) == ([], [], [])
    assert sorted(p[len(str(root)) + 1 :] for p in found) == ["a.py", "keep/e.py", "keep/f.md"]
    # Globs other than *.ext go through fnmatch.
    walk = Walk(globs=["?.[pP][yY]"])
    _, _, stack = walk.start([str(root)], pytest.fail)
    found = walk.explore(stack, 100, pytest.fail)
    expected = ["a.py", "c.PY", "keep/e.py", "skip/d.py"]
    assert sorted(p[len(str(root)) + 1 :] for p in found) == expected


@pytest.mark.parametrize("mode", ["lines", "list", "count"])
@pytest.mark.parametrize("block", [40, 64, 1 << 26])
def test_large_files_are_searched_in_blocks(tmp_path: Path, mode: str, block: int) -> None:
    """A file larger than a block gives the output it gives whole (line numbers included),
    with blocks small enough here to cut it many times."""
    path = tmp_path / "big.txt"
    lines = [f"line {i} {'Pool' if i % 5 == 0 else 'none'} {'x' * (i % 13)}" for i in range(3000)]
    path.write_text("\n".join(lines))  # no newline at the end; larger than the first read
    assert path.stat().st_size > 2**15
    searcher = Searcher(b"Pool", mode=mode, line_numbers=True, block=block)
    found, errors, matched = searcher.search_batch([str(path)])
    assert (errors, matched) == ([], True)
    expected = {
        "lines": "".join(f"{path}:{i + 1}:{line}\n" for i, line in enumerate(lines) if i % 5 == 0),
        "list": f"{path}\n",
        "count": f"{path}:600\n",
    }[mode]
    assert found == [(str(path), expected.encode())]


def test_find_is_bytes_find() -> None:
    rng = random.Random(8)
    for _ in range(300):
        # Long enough for memmem (from 4 KiB on), over a small alphabet so that the needle
        # is found, at the start, in the middle, at the end, or not at all.
        haystack = bytes(rng.choice(b"ab\n") for _ in range(rng.choice([10, 5000, 9000])))
        needle = bytes(rng.choice(b"ab") for _ in range(rng.randint(0, 12)))
        start = rng.randint(0, len(haystack))
        assert _find(haystack, needle, start) == haystack.find(needle, start)
    assert _find(b"x" * 8000 + b"Pool", b"Pool", 0) == 8000
    assert _find(b"Pool" + b"x" * 8000, b"Pool", 1) == -1
