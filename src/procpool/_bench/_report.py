"""From samples to figures: medians, ratios to ``multiprocessing.Pool``, the table, the page.

A ratio above 1 means better than the standard library's pool whichever way the metric goes:
for a rate it is the library's value over the baseline's, for a time or a count the baseline's
over the library's.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_libraries import BASELINE, LIBRARIES
from bench_workloads import WORKLOADS, Metric, Sizes

Sample = dict[str, Any]


@dataclass
class Cell:
    """One library's figure for one metric: the median of its samples, or why there is none."""

    samples: list[float] = field(default_factory=list)
    status: str = "-"
    reason: str = ""
    ratio: float | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def spread(self) -> float | None:
        """(max - min) / median of the samples: how much the repetitions disagreed."""
        median = self.median
        if median is None or median == 0 or len(self.samples) < 2:
            return None
        return (max(self.samples) - min(self.samples)) / abs(median)


@dataclass
class Results:
    """Everything a run produced: the settings, the machine, the samples, the foreign load."""

    command: str
    machine: dict[str, Any]
    sizes: Sizes
    processes: int
    repetitions: int
    libraries: list[str]
    workloads: list[str]
    samples: list[Sample]
    limits: dict[str, str] = field(default_factory=dict)

    def metrics(self) -> list[Metric]:
        return [m for key in self.workloads for m in WORKLOADS[key].metrics]

    def label(self, metric: Metric) -> str:
        return metric.label.format(**self.sizes.labels())

    def cells(self) -> dict[str, dict[str, Cell]]:
        """Per metric key, per library key: the cell, ratios filled in."""
        table: dict[str, dict[str, Cell]] = {}
        for metric in self.metrics():
            row = table[metric.key] = {lib: Cell() for lib in self.libraries}
            for sample in self.samples:
                if metric not in WORKLOADS[sample["workload"]].metrics:
                    continue
                cell = row[sample["library"]]
                if sample["status"] == "ok":
                    cell.status = "ok"  # a failed repetition is a footnote, not the cell
                    cell.samples.append(float(sample["values"][metric.key]))
                elif not cell.samples:
                    cell.status, cell.reason = sample["status"], sample["reason"]
            fill_ratios(metric, row)
        return table

    def start_methods(self) -> dict[str, str]:
        """The start method each library's pools used (its default)."""
        return {s["library"]: s["start_method"] for s in self.samples if s.get("start_method")}

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "machine": self.machine,
            "sizes": self.sizes.labels(),
            "processes": self.processes,
            "repetitions": self.repetitions,
            "libraries": self.libraries,
            "workloads": self.workloads,
            "start_methods": self.start_methods(),
            "medians": {
                key: {
                    lib: {
                        "median": c.median,
                        "ratio": c.ratio,
                        "status": c.status,
                        "samples": len(c.samples),
                        "spread": c.spread,
                    }
                    for lib, c in row.items()
                }
                for key, row in self.cells().items()
            },
            "limits": self.limits,
            "samples": self.samples,
        }


def fill_ratios(metric: Metric, row: dict[str, Cell]) -> None:
    """Each cell's ratio to the baseline's median, oriented so that above 1 is better."""
    median = row[BASELINE].median if BASELINE in row else None
    if median is None:
        return
    base = max(median, metric.floor)
    for cell in row.values():
        if cell.median is None:
            continue
        value = max(cell.median, metric.floor)
        if base > 0 and value > 0:
            cell.ratio = value / base if metric.higher_is_better else base / value


def number(value: float) -> str:
    """Three significant digits, without exponents for large counts."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def cell_text(library: str, cell: Cell) -> str:
    if cell.median is None:
        return {"ok": "-", "unsupported": "n/a", "missing": "n/a"}.get(cell.status, cell.status)
    if library == BASELINE or cell.ratio is None:
        return number(cell.median)
    return f"{number(cell.median)} ({cell.ratio:.2f}x)"


def column_title(library: str, start_methods: dict[str, str]) -> str:
    method = start_methods.get(library)
    title = LIBRARIES[library].title
    return f"{title} [{method}]" if method and "(" not in title else title


def table_rows(results: Results) -> list[list[str]]:
    """The header, then one row per metric: label, unit, direction, each library's cell, and
    the machine's limit."""
    methods = results.start_methods()
    header = [
        "workload",
        "unit",
        "better",
        *[column_title(lib, methods) for lib in results.libraries],
        "the machine's limit",
    ]
    rows = [header]
    cells = results.cells()
    for metric in results.metrics():
        row = cells[metric.key]
        rows.append(
            [results.label(metric), metric.unit, "higher" if metric.higher_is_better else "lower"]
            + [cell_text(lib, row[lib]) for lib in results.libraries]
            + [results.limits.get(metric.key, "")]
        )
    return rows


def target_text(metric: Metric) -> str:
    """Issue 6's target for a metric, in words."""
    words = [f"ratio >= {metric.target_ratio:g}"]
    if metric.target_value is not None:
        bound = ">=" if metric.higher_is_better else "<="
        words.append(f"{bound} {metric.target_value:g} {metric.unit}")
    return ", ".join(words)


def met(metric: Metric, cell: Cell) -> str:
    """Whether procpool's cell meets the metric's target: yes, no, or - without a figure."""
    if cell.median is None or cell.ratio is None:
        return "-"
    ok = cell.ratio >= metric.target_ratio
    if metric.target_value is not None:
        gap = cell.median - metric.target_value
        ok = ok and (gap >= 0 if metric.higher_is_better else gap <= 0)
    return "yes" if ok else "**no**"


def target_rows(results: Results, library: str = "procpool") -> list[list[str]]:
    """procpool's figures against issue 6's targets: the header, then a row per metric."""
    if library not in results.libraries:
        return []
    cells = results.cells()
    rows = [["workload", "target", LIBRARIES[library].title, "met"]]
    for metric in results.metrics():
        cell = cells[metric.key][library]
        figure = cell_text(library, cell)
        rows.append([results.label(metric), target_text(metric), figure, met(metric, cell)])
    return rows


def render_text(rows: Sequence[Sequence[str]]) -> str:
    """A plain table for the terminal: the label column wraps nothing, the rest align right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        rest = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join([row[0].ljust(widths[0]), *rest]))
    return "\n".join(lines)


def render_markdown(rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def footnotes(results: Results) -> list[str]:
    """Why a cell is n/a, skipped or an error (once per reason, naming the libraries); how a
    library stood in for a missing call; which workloads have fewer samples."""
    empty: dict[tuple[str, str, str], list[str]] = {}
    for sample in results.samples:
        if sample["status"] != "ok":
            reason = (sample["workload"], sample["status"], sample["reason"])
            titles = empty.setdefault(reason, [])
            if LIBRARIES[sample["library"]].title not in titles:
                titles.append(LIBRARIES[sample["library"]].title)
    notes = [
        f"{key}, {', '.join(titles)}: {status}: {reason}"
        for (key, status, reason), titles in empty.items()
    ]
    for key in results.workloads:
        cap = WORKLOADS[key].max_repetitions
        if cap is not None and cap < results.repetitions:
            notes.append(f"{key}: {cap} sample(s) per library, not {results.repetitions}")
        notes += [
            f"{key}, {LIBRARIES[library].title}: {note}"
            for library, note in WORKLOADS[key].notes.items()
            if library in results.libraries
        ]
    return notes


def load_summary(results: Results) -> list[str]:
    """The foreign CPU load over the samples: typical, worst, and per library."""
    loads = [s["load"] for s in results.samples if "load" in s]
    if not loads:
        return []
    cpus = [load["foreign_cpus"] for load in loads]
    lines = [
        f"foreign CPU load during the samples: median {statistics.median(cpus):.2f} CPUs, "
        f"max {max(cpus):.2f} CPUs (of {results.machine['cpus']}); one-minute load average "
        f"{min(ld['loadavg'] for ld in loads):.2f}-{max(ld['loadavg'] for ld in loads):.2f}",
    ]
    for library in results.libraries:
        mine = [
            s["load"]["foreign_cpus"]
            for s in results.samples
            if s["library"] == library and "load" in s
        ]
        if mine:
            lines.append(
                f"{LIBRARIES[library].title}: median {statistics.median(mine):.2f}, "
                f"max {max(mine):.2f} CPUs foreign"
            )
    by_name: dict[str, float] = {}
    for load in loads:
        for name, seconds in load["foreign_processes"].items():
            by_name[name] = by_name.get(name, 0.0) + seconds
    busiest = sorted(by_name.items(), key=lambda item: -item[1])[:8]
    if busiest:
        lines.append(
            "other long-lived processes' CPU time during the samples, busiest first: "
            + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in busiest)
        )
    return lines


def spread_summary(results: Results) -> list[str]:
    """How far apart the repetitions were: the typical and the worst cell."""
    spreads = [
        (cell.spread, metric_key, library)
        for metric_key, row in results.cells().items()
        for library, cell in row.items()
        if cell.spread is not None
    ]
    if not spreads:
        return []
    worst = max(spreads)
    return [
        f"spread of the repetitions, (max - min) / median: median "
        f"{statistics.median(s for s, _, _ in spreads):.0%} over the cells, worst {worst[0]:.0%} "
        f"({worst[1]}, {LIBRARIES[worst[2]].title})"
    ]


def write_json(results: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results.to_json(), indent=1) + "\n")
