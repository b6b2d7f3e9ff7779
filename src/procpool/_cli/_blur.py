"""``procpool blur``: Gaussian-blur every image under the given paths, in parallel.

The seed document's image job as a command. Each worker opens, blurs and saves one image per
task; the parent only lists the files and reports. An image is written to a temporary name
and renamed into place, so a run that is interrupted leaves no half-written image behind.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
from collections.abc import Iterator

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Command,
    UsageError,
    make_pool,
    progress_bar,
    warn,
)

__all__ = ["COMMAND", "blur_one"]

_PREFIX = "blurred_"
_EXISTS = "exists (--force overwrites it)"
_DEFAULT_GLOBS = ("*.jpg", "*.jpeg", "*.png", "*.gif", "*.bmp", "*.tif", "*.tiff", "*.webp")

_DESCRIPTION = f"""\
Blur each image (a file PATH, or the images in a directory PATH and below it) with Pillow's
GaussianBlur and save it as blurred_NAME beside the original, or in --out DIR. An existing
output is never overwritten unless --force. Images that cannot be read (corrupt, unsupported)
are reported on stderr and skipped; the others go on. Prints each saved path; a progress bar
on stderr when it is a terminal.

Needs Pillow: pip install 'procpool[cli]'.

In a directory, the files blurred are those named (case aside)
  {" ".join(_DEFAULT_GLOBS)}
or, with --glob, those the globs match. Files named blurred_* are skipped.

exit status: 0 every image was blurred (or already was), 1 some failed, 2 usage error,
130 Ctrl-C.

examples:
  procpool blur photos/
  procpool blur --radius 5 --out /tmp/blurred --glob '*.png' -j 4 shots/
"""


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="images and directories")
    parser.add_argument(
        "--radius", type=float, default=2.0, help="the blur's radius in pixels (default: 2)"
    )
    parser.add_argument(
        "--glob",
        action="append",
        default=[],
        metavar="GLOB",
        help="blur the files of a directory whose name matches GLOB (repeatable)",
    )
    parser.add_argument("--out", metavar="DIR", help="write the blurred images here")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar, even on a terminal"
    )


def blur_one(job: tuple[str, str, float, bool]) -> tuple[str, str, str | None]:
    """Blur the image ``source`` into ``target``: ``(source, target, None)``, or ``(source,
    target, why)`` if it was not written (unreadable image, or the target exists and ``force``
    is off)."""
    source, target, problem = _blur(*job)
    return source, target, problem


def _blur(source: str, target: str, radius: float, force: bool) -> tuple[str, str, str | None]:
    from PIL import Image, ImageFilter

    if not force and os.path.lexists(target):
        return source, target, _EXISTS
    try:
        with Image.open(source) as image:
            blurred = image.filter(ImageFilter.GaussianBlur(radius))
            format_ = image.format
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return source, target, f"cannot read the image: {exc}"
    partial = os.path.join(os.path.dirname(target) or ".", f".{os.path.basename(target)}.part")
    try:
        blurred.save(partial, format=format_)
        os.replace(partial, target)
    except (OSError, ValueError) as exc:
        if os.path.exists(partial):
            os.unlink(partial)
        return source, target, f"cannot write {target}: {exc}"
    return source, target, None


def _images(paths: list[str], globs: list[str]) -> Iterator[str]:
    patterns = [g.lower() for g in globs or _DEFAULT_GLOBS]
    for path in paths:
        if not os.path.isdir(path):
            yield path
            continue
        for directory, subdirectories, names in os.walk(path):
            subdirectories.sort()
            for name in sorted(names):
                lowered = name.lower()
                if not name.startswith(_PREFIX) and any(
                    fnmatch.fnmatchcase(lowered, p) for p in patterns
                ):
                    yield os.path.join(directory, name)


def _target(source: str, out: str | None) -> str:
    directory = out if out is not None else os.path.dirname(source)
    return os.path.join(directory, _PREFIX + os.path.basename(source))


def _run(args: argparse.Namespace) -> int:
    try:
        # Imported here, before the workers are forked from this process: they start with
        # Pillow loaded instead of each importing it.
        from PIL import Image, ImageFilter  # noqa: F401
    except ImportError:
        warn("blur", "needs Pillow, which is not installed: pip install 'procpool[cli]'")
        return EXIT_USAGE
    if args.radius < 0:
        raise UsageError(f"--radius must be 0 or more, not {args.radius}")
    if args.out is not None:
        os.makedirs(args.out, exist_ok=True)
    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        raise UsageError(f"no such file or directory: {', '.join(missing)}")
    jobs = [
        (source, _target(source, args.out), args.radius, args.force)
        for source in _images(args.paths, args.glob)
    ]
    failed = 0
    pool = make_pool(args.workers, fork=True)
    with pool, progress_bar(not args.no_progress, len(jobs)) as bar:
        for source, target, problem in pool.imap_unordered(blur_one, jobs):
            bar.add(1)
            if problem is None:
                print(target, flush=True)
            elif problem is _EXISTS or problem == _EXISTS:
                warn("blur", f"{target}: skipped: {problem}")
            else:
                failed += 1
                warn("blur", f"{source}: {problem}")
    return EXIT_FAILED if failed else EXIT_OK


COMMAND = Command(
    _DESCRIPTION,
    _configure,
    _run,
)
