"""Recovery and memory figures (issue 2 section 7): 5 (reopen a 1M-event log vs a raw replay of the
same files) and 6 (RSS of 1M typical keys vs the same data in a plain dict of dicts).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _benchlib import (
    NO_SNAPSHOTS_MS,
    EventLog,
    Figure,
    Figures,
    interleaved,
    median_rate,
    raw_replay,
)

import evstate

BENCH_DIR = Path(__file__).resolve().parent
REOPEN_ROUNDS = 5


def test_reopen_1m_events(benchmark: Any, figures: Figures, event_log: EventLog) -> None:
    raw_times: list[float] = []
    counts: dict[str, int] = {}

    def evstate_round() -> float:
        t0 = time.perf_counter()
        store = evstate.open(event_log.path, save_interval_ms=NO_SNAPSHOTS_MS)
        store.close()
        elapsed = time.perf_counter() - t0
        counts["evstate"] = store.revision
        return elapsed

    def raw_round() -> None:
        t0 = time.perf_counter()
        events, _table = raw_replay(event_log.path)
        del _table
        raw_times.append(time.perf_counter() - t0)
        counts["raw"] = events

    ev_times = interleaved(benchmark, evstate_round, raw_round, rounds=REOPEN_ROUNDS, warmup=0)
    assert counts == {"evstate": event_log.events, "raw": event_log.events}, counts
    n = event_log.events
    ev = median_rate(n, ev_times)
    raw = median_rate(n, raw_times)
    fig = figures.add(
        Figure(
            "5",
            f"reopen, {n / 1e6:g}M events",
            ev,
            raw,
            "events/s",
            "raw replay (frame+crc+cbor2.loads)",
            ">=200k ev/s",
            ev >= 200_000,
            detail={
                "events": n,
                "log_mib": event_log.bytes / 2**20,
                "build_s": event_log.build_seconds,
                "evstate_s": sorted(ev_times),
                "raw_s": sorted(raw_times),
            },
        )
    )
    benchmark.extra_info.update(fig.detail, evstate_events_s=ev, raw_events_s=raw)


SNAPSHOT_ROUNDS = 3


def test_reopen_from_snapshot(
    benchmark: Any, figures: Figures, event_log: EventLog, tmp_path: Path
) -> None:
    """Context row c3: reopen the same 1M-key state from a snapshot (the usual path once a
    store has run for ``save_interval_ms``), against the same raw replay of the full log."""
    path = str(tmp_path / "store")
    shutil.copytree(event_log.path, path, ignore=shutil.ignore_patterns("LOCK"))
    with evstate.open(path, save_interval_ms=NO_SNAPSHOTS_MS) as store:
        try:
            snap_revision = store.snapshot()
        except Exception as exc:  # a context row: report it as not measured, not as a bug
            pytest.skip(f"store.snapshot() failed, c3 not measured: {exc!r}")
    assert snap_revision == event_log.events
    snap_bytes = sum(os.path.getsize(p) for p in glob.glob(os.path.join(path, "*.snap")))
    raw_times: list[float] = []

    def evstate_round() -> float:
        t0 = time.perf_counter()
        store = evstate.open(path, save_interval_ms=NO_SNAPSHOTS_MS)
        store.close()
        elapsed = time.perf_counter() - t0
        assert store.revision == event_log.events
        return elapsed

    def raw_round() -> None:
        t0 = time.perf_counter()
        raw_replay(event_log.path)
        raw_times.append(time.perf_counter() - t0)

    ev_times = interleaved(benchmark, evstate_round, raw_round, rounds=SNAPSHOT_ROUNDS, warmup=0)
    n = event_log.events
    fig = figures.add(
        Figure(
            "c3",
            f"reopen from a snapshot, {n / 1e6:g}M keys (context)",
            median_rate(n, ev_times),
            median_rate(n, raw_times),
            "events/s",
            "raw replay of the log",
            "",
            None,
            detail={"snapshot_mib": snap_bytes / 2**20, "evstate_s": sorted(ev_times)},
        )
    )
    benchmark.extra_info.update(fig.detail, ratio=fig.ratio)


def _probe(mode: str, arg: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(BENCH_DIR / "_memprobe.py"), mode, arg],
        check=True,
        capture_output=True,
        text=True,
        cwd=BENCH_DIR,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_memory_1m_keys(figures: Figures, event_log: EventLog) -> None:
    n = event_log.events
    plain = _probe("dict", str(n))
    reopened = _probe("evstate-reopen", event_log.path)
    filled = _probe("evstate-set", str(n))
    assert plain["keys"] == reopened["keys"] == filled["keys"] == n
    mib = 2**20
    for fid, name, probe in [
        ("6a", f"RSS, {n / 1e6:g}M keys, reopened file store", reopened),
        ("6b", f"RSS, {n / 1e6:g}M keys, in-memory store via set", filled),
    ]:
        ratio = probe["delta"] / plain["delta"]
        figures.add(
            Figure(
                fid,
                name,
                probe["delta"] / mib,
                plain["delta"] / mib,
                "MiB",
                "dict of dicts",
                "<=2x",
                ratio <= 2.0,
                higher_is_better=False,
                detail={"evstate": probe, "dict": plain},
            )
        )
