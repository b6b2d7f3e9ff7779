"""Which files under a folder contain a keyword? (The seed document's text-search application.)

    python examples/text_search.py KEYWORD [FOLDER] [--glob PATTERN]
    python examples/text_search.py KEYWORD --in-stdlib

Reads every file matching PATTERN (default ``*.md``) under FOLDER (default ``.``) as UTF-8,
ignoring undecodable bytes, in a procpool Pool with ``pool.map`` over ``(path, keyword)`` pairs,
and prints the matching files and how many there are. ``--in-stdlib`` searches the ``*.py`` files
of Python's own standard library instead: a corpus of some ten thousand files on any machine.
"""

from __future__ import annotations

import argparse
import sysconfig
from pathlib import Path

from procpool import Pool, cpu_count


def search_file(job: tuple[str, str]) -> tuple[str, bool]:
    """Whether the file at ``path`` contains ``keyword``."""
    path, keyword = job
    text = Path(path).read_text(encoding="utf-8", errors="ignore")
    return path, keyword in text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keyword")
    parser.add_argument("folder", nargs="?", default=".")
    parser.add_argument("--glob", default="*.md", help="file name pattern (default: *.md)")
    parser.add_argument("--in-stdlib", action="store_true", help="search the stdlib's *.py files")
    args = parser.parse_args()
    if args.in_stdlib:
        args.folder, args.glob = sysconfig.get_path("stdlib"), "*.py"
    paths = sorted(str(p) for p in Path(args.folder).rglob(args.glob) if p.is_file())
    with Pool(cpu_count()) as pool:
        results = pool.map(search_file, [(path, args.keyword) for path in paths])
    matches = [path for path, found in results if found]
    for path in matches:
        print(path)
    print(f"{len(matches)} of {len(paths)} files matching {args.glob!r} contain {args.keyword!r}")


if __name__ == "__main__":
    main()
