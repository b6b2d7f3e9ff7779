"""Blur every JPEG in a folder in parallel. (The seed document's image-processing application.)

    python examples/blur_images.py FOLDER [--make-samples N]

Needs Pillow (``pip install 'procpool[examples]'``). Each ``*.jpg`` in FOLDER is blurred with
``ImageFilter.GaussianBlur(radius=2)`` and saved beside it as ``blurred_<name>``, with
``pool.imap_unordered`` over a ``Pool(cpu_count())``; each saved path is printed as it is done.
``--make-samples N`` first writes N random test images into FOLDER.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageFilter

from procpool import Pool, cpu_count


def blur_image(path: str) -> str:
    """Blur one image and save it beside the original; return the new file's path."""
    source = Path(path)
    target = source.with_name(f"blurred_{source.name}")
    with Image.open(source) as image:
        image.filter(ImageFilter.GaussianBlur(radius=2)).save(target)
    return str(target)


def make_samples(folder: Path, count: int) -> None:
    """Write ``count`` random 640x480 JPEGs into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = Image.frombytes("RGB", (640, 480), random.randbytes(640 * 480 * 3))
        image.save(folder / f"sample_{i:03d}.jpg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--make-samples", type=int, default=0, metavar="N")
    args = parser.parse_args()
    if args.make_samples:
        make_samples(args.folder, args.make_samples)
    images = sorted(str(p) for p in args.folder.glob("*.jpg") if not p.name.startswith("blurred_"))
    with Pool(cpu_count()) as pool:
        for saved in pool.imap_unordered(blur_image, images):
            print(saved)


if __name__ == "__main__":
    main()
