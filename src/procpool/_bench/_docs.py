"""``docs/benchmarks.md`` and its plot, written from a run's results (``--write-docs``)."""

from __future__ import annotations

import inspect
from pathlib import Path

from bench_libraries import BASELINE, LIBRARIES
from bench_workloads import WORKLOADS

from ._report import (
    Results,
    footnotes,
    load_summary,
    render_markdown,
    spread_summary,
    table_rows,
    target_rows,
)

PLOT = "benchmarks.png"


def plot(results: Results, path: Path) -> bool:
    """Bars of each library's ratio to ``multiprocessing.Pool``, per metric; False without
    matplotlib (the ``bench`` extra installs it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    cells = results.cells()
    metrics = results.metrics()
    peers = [lib for lib in results.libraries if lib != BASELINE]
    height = 0.8 / max(len(peers), 1)
    figure, axes = plt.subplots(figsize=(11, 0.55 * len(metrics) + 1.5))
    for i, library in enumerate(peers):
        ratios = [cells[m.key][library].ratio for m in metrics]
        shown = [(row + i * height, r) for row, r in enumerate(ratios) if r is not None]
        # Bars start at 1 (as good as the standard library): right is better, left worse.
        axes.barh(
            [position for position, _ in shown],
            [r - 1 for _, r in shown],
            height,
            left=1,
            label=LIBRARIES[library].title,
        )
    axes.axvline(1.0, color="black", linewidth=1)
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    axes.set_yticks([row + 0.4 - height / 2 for row in range(len(metrics))])
    axes.set_yticklabels([f"{m.key} ({m.unit})" for m in metrics], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("ratio to multiprocessing.Pool (log scale; > 1: better than the stdlib)")
    axes.set_title(
        f"{results.machine['cpu_model']}, {results.processes} workers, {results.machine['date']}",
        fontsize=9,
    )
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def summary(function: object) -> str:
    """The first paragraph of a function's docstring, on one line."""
    doc = inspect.getdoc(function) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def machine_lines(results: Results) -> list[str]:
    m = results.machine
    packages = ", ".join(f"{name} {version}" for name, version in m["packages"].items())
    return [
        f"- date: {m['date']}; procpool commit {m['commit']}",
        f"- CPU: {m['cpu_model']}, {m['cpus']} CPUs ({m['cpus_usable']} usable), "
        f"{m['memory_gib']} GiB memory; {m['os']}",
        f"- Python: {m['python']}; {packages}",
        f"- {results.processes} workers per pool, {results.repetitions} interleaved "
        f"repetition(s), medians",
    ]


def page(results: Results, plotted: bool) -> str:
    """The Markdown page: how it was measured, on what, the table, the load, the plot."""
    methods = results.start_methods()
    parts = [
        "# Benchmarks",
        "",
        "Written by the benchmark suite; regenerate with the command below (it rewrites this "
        "page, `benchmarks.png` and `benchmarks.json`, which holds every raw sample).",
        "",
        f"```sh\n{results.command}\n```",
        "",
        "Each library runs each workload in a fresh Python process (never two pools in one "
        "interpreter); the repetitions are interleaved (every library once, then again); each "
        "figure is the median of its samples, and the ratio in brackets compares it with "
        "`multiprocessing.Pool` (the standard library's default start method): **above 1 is "
        "better than the standard library**, whether the metric is a rate or a time. Every "
        "library gets the same inputs. Pools are started and warmed before the timing, except "
        "in the start-up rows, which time exactly that with each library's default start "
        'method. "n/a": the library has no such call; "-": not measured. The last column is '
        "the machine's own limit, measured by the suite before the samples: one core calling "
        "the task with no pool, a pipe round trip between two processes, one memory copy, a "
        "fork and wait. Other programs may share the machine: the last section says how much "
        "CPU they took during the samples. Compare ratios within one run rather than figures "
        "across runs.",
        "",
        "## Machine",
        "",
        *machine_lines(results),
        "",
        "## Libraries",
        "",
        *[f"- {LIBRARIES[lib].title}: {LIBRARIES[lib].how}" for lib in results.libraries],
        "- start methods (each library's default): "
        + ", ".join(f"{LIBRARIES[lib].title} {method}" for lib, method in methods.items()),
        "",
        "## Workloads",
        "",
        *[f"- {key}: {summary(WORKLOADS[key].measure)}" for key in results.workloads],
        "",
        "## Results",
        "",
        render_markdown(table_rows(results)),
        "",
        *[f"- {note}" for note in footnotes(results) + spread_summary(results)],
        "",
    ]
    if plotted:
        parts += [f"![ratios to multiprocessing.Pool]({PLOT})", ""]
    targets = target_rows(results)
    if targets:
        parts += [
            "## procpool against the targets",
            "",
            "Issue 6's targets: faster than `multiprocessing.Pool` on every workload (ratio at "
            "least 1), by the ratio it names where it names one, and within its bounds.",
            "",
            render_markdown(targets),
            "",
        ]
    parts += ["## Foreign CPU load", "", *[f"- {line}" for line in load_summary(results)], ""]
    return "\n".join(parts)


def write_docs(results: Results, directory: Path) -> Path:
    """Write the page and the plot into ``directory``; return the page's path."""
    directory.mkdir(parents=True, exist_ok=True)
    plotted = plot(results, directory / PLOT)
    path = directory / "benchmarks.md"
    path.write_text(page(results, plotted))
    return path
