"""Every example of the seed document runs with procpool and prints what it prints with the
standard library: each is run as written, then as a copy importing ``multiprocessing`` instead.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from _cli import LIMIT, env

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _text_search(tmp_path: Path) -> list[str]:
    folder = tmp_path / "notes"
    folder.mkdir()
    for i in range(12):
        (folder / f"note{i:02d}.md").write_text("a keyword here\n" if i % 3 == 0 else "nothing\n")
    (folder / "other.txt").write_text("keyword, but not markdown\n")
    return ["keyword", str(folder)]


def _blur_images(tmp_path: Path) -> list[str]:
    pytest.importorskip("PIL")
    folder = tmp_path / "images"
    subprocess.run(
        [sys.executable, str(EXAMPLES / "blur_images.py"), str(folder), "--make-samples", "3"],
        check=True,
        capture_output=True,
        timeout=LIMIT,
    )
    return [str(folder)]


# Each example and how to make its arguments (None: it takes none).
CASES = {
    "process_basics.py": None,
    "pool_methods.py": None,
    "async_results.py": None,
    "shutdown.py": None,
    "pool_options.py": None,
    "text_search.py": _text_search,
    "blur_images.py": _blur_images,
}


def test_every_example_has_a_case() -> None:
    assert sorted(CASES) == sorted(p.name for p in EXAMPLES.glob("*.py"))


def _run(script: Path, args: list[str]) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        timeout=LIMIT,
        env=env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    # Lines from several processes, or from imap_unordered, come in any order.
    return sorted(result.stdout.decode().splitlines())


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_prints_what_the_standard_library_prints(name: str, tmp_path: Path) -> None:
    make_args = CASES[name]
    args = make_args(tmp_path) if make_args is not None else []
    source = (EXAMPLES / name).read_text()
    assert "from procpool import" in source
    stdlib_copy = tmp_path / f"stdlib_{name}"
    stdlib_copy.write_text(source.replace("from procpool import", "from multiprocessing import"))
    ours = _run(EXAMPLES / name, args)
    assert ours  # every example prints something
    assert ours == _run(stdlib_copy, args)
