"""Running the ``procpool`` command in the tests: a subprocess, bounded, in the C locale."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# A command that takes longer has hung: fail the test instead of the run.
LIMIT = 60


def env() -> dict[str, str]:
    """The environment of the commands: the C locale, so GNU grep compares bytes as we do."""
    return {**os.environ, "LC_ALL": "C"}


def procpool(
    *args: str, cwd: str | Path | None = None, stdin: str | None = None, prefix: Sequence[str] = ()
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m procpool ARGS`` (``prefix``: a command that runs it, e.g. setpriv)."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "procpool", *args],
        cwd=cwd,
        input=None if stdin is None else stdin.encode(),
        capture_output=True,
        timeout=LIMIT,
        env=env(),
        check=False,
    )


def gnu_grep(*args: str, cwd: str | Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run GNU grep (the tests that compare with it are skipped where it is missing)."""
    grep = shutil.which("grep")
    assert grep is not None
    return subprocess.run(
        [grep, *args], cwd=cwd, capture_output=True, timeout=LIMIT, env=env(), check=False
    )


def lines(output: bytes) -> list[bytes]:
    """Output lines, sorted: the commands print files in the order they finish."""
    return sorted(output.splitlines())
