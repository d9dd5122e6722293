"""Benchmark suite configuration: collection, the shared 1M-event log, the summary table.

Run with ``python3 tools/dev.py bench`` (``pytest bench -q -p no:cacheprovider``). Every test
records one or more :class:`Figure` rows; at the end one table lists them all (figure,
evstate, baseline, ratio, target, met?). pytest-benchmark's own per-test table is hidden
unless ``EVSTATE_BENCH_DETAIL=1``; ``EVSTATE_BENCH_JSON=<path>`` also writes the figures
as JSON. ``EVSTATE_BENCH_EVENTS`` shrinks the 1M-event log for a quick trial run.
"""

from __future__ import annotations

import gc
import glob
import json
import os
import platform
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _benchlib import (
    NO_SNAPSHOTS_MS,
    SCOPE,
    EventLog,
    Figure,
    Figures,
    fmt_value,
    key_name,
    typical_value,
)

import evstate

LOG_EVENTS = int(os.environ.get("EVSTATE_BENCH_EVENTS", "1000000"))

_FIGURES = pytest.StashKey[list[Figure]]()


def pytest_configure(config: pytest.Config) -> None:
    # Collect bench/test_bench_*.py (the default pattern already does) and bench_*.py.
    config.addinivalue_line("python_files", "bench_*.py")
    config.stash[_FIGURES] = []
    # A test that fails before its first round should report that failure only.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:Benchmark fixture was not used:pytest_benchmark.logger.PytestBenchmarkWarning",
    )
    if not os.environ.get("EVSTATE_BENCH_DETAIL") and hasattr(config.option, "benchmark_quiet"):
        config.option.benchmark_quiet = True
        session = getattr(config, "_benchmarksession", None)
        if session is not None:  # pytest-benchmark configured before us
            session.quiet = True


@pytest.fixture(scope="session")
def figures(pytestconfig: pytest.Config) -> Figures:
    return Figures(pytestconfig.stash[_FIGURES])


@pytest.fixture(scope="session")
def event_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventLog]:
    """The 1M-event log, built once per session through the public API (fsync="never").

    Every event is a ``set`` of a new key ``users/user_<i>`` to :func:`typical_value`,
    so the reopened store holds 1M typical keys (figures 5 and 6a). No snapshot is taken
    (``save_interval_ms`` at its maximum, and the build takes well under an hour).
    """
    path = str(tmp_path_factory.mktemp("log1m") / "store")
    t0 = time.perf_counter()
    # No snapshot may cover the log: figure 5 measures replaying all of it.
    store = evstate.open(path, fsync="never", save_interval_ms=NO_SNAPSHOTS_MS)
    try:
        set_ = store.set
        for i in range(LOG_EVENTS):
            set_(SCOPE, key_name(i), typical_value(i))
    finally:
        store.close()
    log = EventLog(path, LOG_EVENTS, time.perf_counter() - t0)
    assert not glob.glob(os.path.join(path, "*.snap")), "a snapshot covers the benchmark log"
    gc.collect()
    yield log


# ---- the summary table -------------------------------------------------------------------


def _sort_key(fig: Figure) -> tuple[int, str]:
    return (1 if fig.fid.startswith("c") else 0, fig.fid)


def _rows(figs: list[Figure]) -> list[list[str]]:
    rows = [["figure", "evstate", "baseline", "ratio", "target", "met?"]]
    for fig in sorted(figs, key=_sort_key):
        met = {None: "(context)", True: "met", False: "MISSED"}[fig.met]
        rows.append(
            [
                f"{fig.fid}. {fig.name}",
                fmt_value(fig.evstate, fig.unit),
                f"{fmt_value(fig.baseline, fig.unit)} ({fig.baseline_name})",
                f"{fig.ratio:.2f}x",
                fig.target or "-",
                met,
            ]
        )
    return rows


def format_table(figs: list[Figure]) -> list[str]:
    rows = _rows(figs)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.rjust(w) if i in (1, 3) and n else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def source_version() -> str:
    """The commit the measured evstate comes from, with a note if evstate/ has edits."""
    root = Path(__file__).resolve().parent.parent
    git = ["git", "--no-optional-locks", "-C", str(root)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "evstate"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "(commit unknown)"
    return f"at commit {head}" + (" + uncommitted changes in evstate/" if dirty else "")


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    figs = config.stash.get(_FIGURES, [])
    if not figs:
        return
    tr = terminalreporter
    tr.section("evstate benchmark summary", sep="=", bold=True)
    tr.write_line(f"evstate {source_version()}; python {platform.python_version()}")
    tr.write_line(
        "ratio = evstate / baseline, both measured in this run with interleaved rounds "
        "(medians); memory: ratio = evstate RSS / dict RSS, lower is better; "
        "times (ms, us): ratio = evstate time / baseline time, lower is better"
    )
    for line in format_table(figs):
        tr.write_line(line)
    met = sorted(f.fid for f in figs if f.met is True)
    missed = sorted(f.fid for f in figs if f.met is False)
    tr.write_line(
        f"targets met: {len(met)} ({', '.join(met) or '-'}); "
        f"missed: {len(missed)} ({', '.join(missed) or '-'})"
    )
    out = os.environ.get("EVSTATE_BENCH_JSON")
    if out:
        Path(out).write_text(json.dumps([f.as_dict() for f in figs], indent=2) + "\n")
        tr.write_line(f"figures written to {out}")
