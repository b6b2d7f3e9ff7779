"""The benchmark suite never rots: its quick mode runs every workload and reports well-formed
figures (no time is asserted: this machine's speed is not the test's business)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from procpool._bench._report import Cell, Metric, fill_ratios
from procpool._bench._suite import WORKLOADS, Sizes, plan

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ["multiprocessing", "procpool"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], Path]:
    """One quick run of the one command, for procpool and multiprocessing: stdout, JSON, docs."""
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--timeout",
            "60",
            "--libs",
            ",".join(LIBRARIES),
            "--json",
            str(out / "run.json"),
            "--write-docs",
            "--docs-dir",
            str(out / "docs"),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads((out / "run.json").read_text()), out / "docs"


def test_every_workload_has_a_figure_or_a_reason(
    quick_run: tuple[str, dict[str, Any], Path],
) -> None:
    _, results, _ = quick_run
    assert results["libraries"] == LIBRARIES
    assert results["workloads"] == list(WORKLOADS)
    for workload in WORKLOADS.values():
        installed = all(importlib.util.find_spec(module) for module in workload.needs)
        for metric in workload.metrics:
            for library in LIBRARIES:
                cell = results["medians"][metric.key][library]
                if not installed:
                    assert cell["status"] == "missing"
                elif workload.skip == "big_mb":  # quick mode leaves out the 1 GB array
                    assert cell["status"] == "skipped"
                else:
                    assert cell["status"] == "ok", (metric.key, library, cell)
                    assert math.isfinite(cell["median"])
                    if metric.key != "gen_rss_mb":  # memory may not grow at all
                        assert cell["median"] > 0


def test_table_and_page_name_every_metric(quick_run: tuple[str, dict[str, Any], Path]) -> None:
    stdout, results, docs = quick_run
    page = (docs / "benchmarks.md").read_text()
    sizes = Sizes(**results["sizes"])
    for workload in WORKLOADS.values():
        for metric in workload.metrics:
            label = metric.label.format(**sizes.labels())
            assert label in stdout
            assert f"| {label} | {metric.unit} |" in page
    assert "multiprocessing.Pool [" in stdout
    assert "python benchmarks/run.py --quick" in page
    assert "foreign CPU load" in page
    assert "## procpool against the targets" in page
    assert "| the machine's limit |" in page
    assert (docs / "benchmarks.json").exists()
    if importlib.util.find_spec("matplotlib") is not None:
        assert (docs / "benchmarks.png").read_bytes().startswith(b"\x89PNG")


def test_ratios_read_above_one_as_better() -> None:
    rate = Metric("rate", "a rate", "per s", True)
    time = Metric("time", "a time", "s", False)
    for metric, base, value, ratio in ((rate, 2.0, 3.0, 1.5), (time, 2.0, 4.0, 0.5)):
        row = {"multiprocessing": Cell([base]), "procpool": Cell([value])}
        fill_ratios(metric, row)
        assert row["procpool"].ratio == pytest.approx(ratio)
        assert row["multiprocessing"].ratio == pytest.approx(1.0)


def test_ratios_ignore_differences_below_the_noise_floor() -> None:
    memory = Metric("memory", "memory grown", "MB", False, floor=1.0)
    row = {"multiprocessing": Cell([0.1]), "procpool": Cell([0.5]), "billiard": Cell([4.0])}
    fill_ratios(memory, row)
    assert row["procpool"].ratio == pytest.approx(1.0)
    assert row["billiard"].ratio == pytest.approx(0.25)


def test_plan_interleaves_and_rotates() -> None:
    libraries = ["multiprocessing", "procpool", "multiprocessing-forkserver"]
    order = plan(libraries, ["map_tiny", "startup"], reps=2)
    assert order[:2] == [(0, "map_tiny", "multiprocessing"), (0, "map_tiny", "procpool")]
    # The start-up-only variant runs only where the pool's start is what is timed.
    assert [lib for rep, key, lib in order if key == "map_tiny" and rep == 1] == [
        "procpool",
        "multiprocessing",
    ]
    assert [lib for rep, key, lib in order if key == "startup" and rep == 1] == [
        "procpool",
        "multiprocessing-forkserver",
        "multiprocessing",
    ]
