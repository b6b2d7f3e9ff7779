"""``procpool grep`` against GNU ``grep -r`` on real trees of files the tests make.

procpool grep skips hidden names unless ``--hidden`` and binary files unless ``-a``: its output
is that of ``grep -rI --exclude='.*' --exclude-dir='.*'``, which each comparison runs beside it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from _cli import LIMIT, env, gnu_grep, lines, procpool

pytestmark = pytest.mark.skipif(shutil.which("grep") is None, reason="needs GNU grep")

HIDE = ("--exclude=.*", "--exclude-dir=.*")

# More files than one step of the search walks (1,024), so the workers search this tree.
MANY = 1100


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Text files, a binary file, hidden files, symbolic links (one a loop, one dangling), a
    FIFO."""
    root = tmp_path_factory.mktemp("tree")
    (root / "a.py").write_text("import Pool\nx = 1\nPool()\nlast Pool line, no newline")
    (root / "b.md").write_text("pool lower\nPOOL upper\nPooling, a longer word\n")
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "sub" / "c.py").write_text("Pool\n\nPool again\n")
    (root / "sub" / "deep" / "d.txt").write_text("nothing here\n")
    (root / "empty.txt").write_text("")
    (root / "bin.dat").write_bytes(b"Pool\0binary\n")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "h.py").write_text("Pool in a hidden directory\n")
    (root / ".dot.py").write_text("Pool in a hidden file\n")
    (root / "loop").symlink_to(".")  # a symbolic link loop
    (root / "link.py").symlink_to("a.py")
    (root / "dangling").symlink_to("missing")
    os.mkfifo(root / "pipe.txt")  # skipped inside a tree, as grep -r skips it (never opened)
    many = root / "many"
    many.mkdir()
    for i in range(MANY):
        (many / f"f{i:03d}.txt").write_text(f"line {i}\n" + ("Pool here\n" if i % 7 == 0 else ""))
    return root


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ((), "Pool"),
        (("-l",), "Pool"),
        (("-c",), "Pool"),
        (("-n",), "Pool"),
        (("-i",), "pool"),
        (("-w",), "Pool"),
        (("-i", "-n", "-w"), "POOL"),
        (("-l", "-i"), "pool"),
        (("-E",), r"^Pool|ling, a\b"),
        (("-E", "-n", "-w"), r"P[o]+l"),
        (("-E", "-c"), r"\s$|^$"),
        (("-E", "-n"), r"^[[:upper:]][[:lower:]]+\(|[[:digit:]]{3}|[[:punct:]]$"),
        (("-E", "-c"), r"\<Pool\>|[[:space:]]again"),
        ((), ""),
        (("-n",), "Pool()\nnothing"),  # one pattern a line, as grep reads them
        (("-c", "-E"), "^Pool$\nlonger"),
    ],
)
def test_output_is_grep_r(tree: Path, options: tuple[str, ...], pattern: str) -> None:
    ours = procpool("grep", *options, pattern, str(tree))
    theirs = gnu_grep("-rI", *HIDE, *options, pattern, str(tree))
    assert lines(ours.stdout) == lines(theirs.stdout)
    assert ours.stdout  # every case matches something in the tree
    assert ours.returncode == theirs.returncode == 0
    assert ours.stderr == b""


def test_binary_files_with_a(tree: Path) -> None:
    ours = procpool("grep", "-a", "binary", str(tree))
    theirs = gnu_grep("-ra", *HIDE, "binary", str(tree))
    assert lines(ours.stdout) == lines(theirs.stdout) == [f"{tree}/bin.dat:Pool\0binary".encode()]
    # Without -a the binary file is skipped, as grep -I skips it: nothing matches.
    skipped = procpool("grep", "binary", str(tree))
    assert (skipped.stdout, skipped.returncode) == (b"", 1)


def test_hidden_and_glob(tree: Path) -> None:
    ours = procpool("grep", "-l", "--hidden", "--glob", "*.py", "Pool", str(tree))
    theirs = gnu_grep("-rlI", "--include=*.py", "Pool", str(tree))
    assert lines(ours.stdout) == lines(theirs.stdout)
    assert f"{tree}/.hidden/h.py".encode() in lines(ours.stdout)
    # Several globs, and one that excludes a directory.
    ours = procpool(
        "grep", "-l", "--glob", "*.py", "--glob", "*.md", "--glob", "!sub", "ool", str(tree)
    )
    assert lines(ours.stdout) == [f"{tree}/a.py".encode(), f"{tree}/b.md".encode()]


def test_operands_as_grep_names_them(tree: Path) -> None:
    # No operand: the current directory, names without "./"; one file: no name at all.
    for args, cwd in [
        (("Pool",), tree),
        (("Pool", "a.py"), tree),
        (("Pool", "sub/", "a.py"), tree),
    ]:
        ours = procpool("grep", *args, cwd=cwd)
        theirs = gnu_grep("-rI", *HIDE, *args, cwd=cwd)
        assert lines(ours.stdout) == lines(theirs.stdout), args
    assert (
        procpool("grep", "-n", "Pool", "a.py", cwd=tree).stdout
        == b"1:import Pool\n3:Pool()\n4:last Pool line, no newline\n"
    )


def test_sort_path(tree: Path) -> None:
    result = procpool("grep", "-n", "--sort", "path", "Pool", str(tree))
    names = [line.split(b":", 1)[0] for line in result.stdout.splitlines()]
    assert names == sorted(names)
    assert len(names) == len(lines(gnu_grep("-rnI", *HIDE, "Pool", str(tree)).stdout))
    # Within a file, lines keep their order.
    assert result.stdout.count(b"sub/c.py:1:Pool\n" + str(tree).encode() + b"/sub/c.py:3:") == 1


def test_exit_statuses(tree: Path) -> None:
    assert procpool("grep", "-l", "Pool", str(tree)).returncode == 0
    none = procpool("grep", "-l", "no such words", str(tree))
    assert (none.returncode, none.stdout, none.stderr) == (1, b"", b"")
    # A missing operand is an error (2) but the other operands are still searched.
    missing = procpool("grep", "-l", "Pool", str(tree / "nope"), str(tree / "sub"))
    assert missing.returncode == gnu_grep("-rl", "Pool", str(tree / "nope")).returncode == 2
    assert missing.stdout == f"{tree}/sub/c.py\n".encode()
    assert b"nope: No such file or directory" in missing.stderr
    bad = procpool("grep", "-E", "(unclosed", str(tree))
    assert bad.returncode == 2
    assert b"invalid regular expression" in bad.stderr
    usage = procpool("grep", "-l", "-c", "Pool")
    assert usage.returncode == 2
    assert b"not allowed with" in usage.stderr


def _unprivileged() -> list[str]:
    """A prefix that runs a command without the capabilities that let root read any file:
    the honest way to make a file unreadable in a test that runs as root. Empty for others."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("runs as root without setpriv: no way to make a file unreadable")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


def test_unreadable_files_are_reported_and_the_search_goes_on(tmp_path: Path) -> None:
    (tmp_path / "ok.txt").write_text("Pool\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("Pool\n")
    closed = tmp_path / "closed"
    closed.mkdir()
    (closed / "inside.txt").write_text("Pool\n")
    prefix = _unprivileged()
    secret.chmod(0)
    closed.chmod(0)
    try:
        ours = procpool("grep", "-l", "Pool", str(tmp_path), prefix=prefix)
    finally:
        secret.chmod(0o644)
        closed.chmod(0o755)
    assert ours.stdout == f"{tmp_path}/ok.txt\n".encode()
    assert ours.returncode == 2  # grep's status for an error, even with a match
    assert f"procpool grep: {secret}: Permission denied".encode() in ours.stderr
    assert f"procpool grep: {closed}: Permission denied".encode() in ours.stderr


def test_unreadable_file_in_a_large_tree(tree: Path, tmp_path: Path) -> None:
    """The same in a tree the workers search: the error comes back from a worker."""
    shutil.copytree(tree / "many", tmp_path / "many")
    secret = tmp_path / "many" / "f000.txt"
    prefix = _unprivileged()
    secret.chmod(0)
    try:
        ours = procpool("grep", "-l", "Pool", str(tmp_path), prefix=prefix)
    finally:
        secret.chmod(0o644)
    assert ours.returncode == 2
    assert f"{secret}: Permission denied".encode() in ours.stderr
    assert len(ours.stdout.splitlines()) == len(range(0, MANY, 7)) - 1


def test_gitignore(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("*.log\nbuild/\n!keep.log\n/rootonly.txt\n# comment\n")
    for name in ["a.txt", "x.log", "keep.log", "rootonly.txt", "build/b.txt", "sub/rootonly.txt",
                 "sub/y.log", "sub/build", "sub/deeper/z.txt"]:  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("Pool\n")
    (tmp_path / "sub" / ".gitignore").write_text("deeper/\n")
    result = procpool("grep", "-l", "--gitignore", "--sort", "path", "Pool", str(tmp_path))
    kept = ["a.txt", "keep.log", "sub/build", "sub/rootonly.txt"]
    assert result.stdout.decode().splitlines() == [f"{tmp_path}/{name}" for name in kept]
    everything = procpool("grep", "-l", "Pool", str(tmp_path))
    assert len(everything.stdout.splitlines()) == 9


def test_workers_option_and_help(tree: Path) -> None:
    one = procpool("grep", "-j", "1", "-c", "Pool", str(tree))
    assert lines(one.stdout) == lines(gnu_grep("-rcI", *HIDE, "Pool", str(tree)).stdout)
    help_text = procpool("grep", "--help").stdout.decode()
    for option in [
        "--glob",
        "--hidden",
        "--gitignore",
        "-E",
        "-l",
        "-c",
        "-w",
        "--sort",
        "exit status",
    ]:
        assert option in help_text


def test_a_reader_that_goes_away_stops_the_search_quietly(tree: Path) -> None:
    command = subprocess.Popen(
        # Every line, three times over: far more than a pipe holds.
        [sys.executable, "-m", "procpool", "grep", "-n", "", *[str(tree)] * 3],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(),
    )
    assert command.stdout is not None
    assert command.stdout.readline()  # one line, then the reader goes away (as `| head -1`)
    command.stdout.close()
    _, stderr = command.communicate(timeout=LIMIT)
    assert command.returncode == 141
    assert stderr == b""


def test_a_fifo_on_the_command_line_is_read_to_its_end(tmp_path: Path) -> None:
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "w") as f:  # opens once the command opens the FIFO to read
            f.write("filler line\n" * 5000 + "Pool at the end\n")  # past the first read

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    result = procpool("grep", "-n", "Pool", str(fifo))
    writer.join(LIMIT)
    assert (result.stdout, result.returncode) == (b"5001:Pool at the end\n", 0)


def test_output_before_the_workers_start_is_printed_once(tree: Path, tmp_path: Path) -> None:
    """A FIFO operand is searched before the workers of a large tree are forked: what it
    printed must not be printed again by the forked workers as they exit."""
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "w") as f:
            f.write("Pool from the stream\n")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    result = procpool("grep", "Pool", str(fifo), str(tree / "many"))
    writer.join(LIMIT)
    assert result.stdout.count(b"Pool from the stream") == 1
    assert len(result.stdout.splitlines()) == 1 + len(range(0, MANY, 7))
