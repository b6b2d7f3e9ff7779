"""``procpool blur`` on real images the tests make, a corrupt one and a file that is no image."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from _cli import LIMIT, env, procpool

Image = pytest.importorskip("PIL.Image")
ImageFilter = pytest.importorskip("PIL.ImageFilter")


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    rng = random.Random(8)
    for name in ["a.jpg", "b.png", "nested/c.JPG"]:
        Image.frombytes("RGB", (64, 48), rng.randbytes(64 * 48 * 3)).save(folder / name)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 and then nothing a JPEG needs")
    (folder / "notes.png").write_text("a text file named like an image")
    (folder / "readme.txt").write_text("not an image, and not named like one")
    return folder


def test_blurs_every_image_and_reports_the_bad_ones(photos: Path) -> None:
    result = procpool("blur", "--radius", "3", str(photos))
    saved = sorted(result.stdout.decode().splitlines())
    assert saved == [
        str(photos / n) for n in ["blurred_a.jpg", "blurred_b.png", "nested/blurred_c.JPG"]
    ]
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert f"{photos / 'corrupt.jpg'}: cannot read the image" in stderr
    assert f"{photos / 'notes.png'}: cannot read the image" in stderr
    # The output is Pillow's blur of the original, in the original's format.
    with Image.open(photos / "b.png") as original, Image.open(photos / "blurred_b.png") as ours:
        expected = original.filter(ImageFilter.GaussianBlur(3))
        assert ours.format == "PNG"
        assert ours.tobytes() == expected.tobytes()
    assert not list(photos.rglob("*.part"))


def test_never_overwrites_unless_forced(photos: Path) -> None:
    image = str(photos / "a.jpg")
    assert procpool("blur", image).returncode == 0
    target = photos / "blurred_a.jpg"
    target.write_bytes(b"keep me")
    again = procpool("blur", image)
    assert again.returncode == 0
    assert b"skipped: exists" in again.stderr
    assert target.read_bytes() == b"keep me"
    forced = procpool("blur", "--force", image)
    assert forced.stdout.decode().strip() == str(target)
    assert target.read_bytes() != b"keep me"
    # Blurred outputs are not blurred again when their folder is.
    assert "blurred_blurred" not in procpool("blur", "--force", str(photos)).stdout.decode()


def test_out_dir_and_glob(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = procpool("blur", "--out", str(out), "--glob", "*.png", "-j", "1", str(photos))
    assert result.stdout.decode().split() == [str(out / "blurred_b.png")]
    assert result.returncode == 1  # notes.png is no image
    assert sorted(p.name for p in out.iterdir()) == ["blurred_b.png"]


def test_usage_errors(photos: Path) -> None:
    missing = procpool("blur", str(photos / "nope"))
    assert missing.returncode == 2
    assert b"no such file or directory" in missing.stderr
    assert procpool("blur").returncode == 2
    assert procpool("blur", "--radius", "-1", str(photos)).returncode == 2


def test_without_pillow_says_what_to_install(photos: Path) -> None:
    # Pillow made unimportable, as on an installation without the extra.
    code = "import sys; sys.modules['PIL'] = None; from procpool._cli import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", code, "blur", str(photos)],
        capture_output=True,
        timeout=LIMIT,
        env=env(),
        check=False,
    )
    assert result.returncode == 2
    assert b"pip install 'procpool[cli]'" in result.stderr
