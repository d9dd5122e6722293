"""Disk use of a store nobody configured (issue 12): row 12a (slow writes of a large value)
and 12b (fast writes of typical values).

Figure: bytes on disk over (state size + retained log), where the state size is the encoded
state (keys and CBOR values) and the retained log is ``stats()["log_bytes"]``. The bound of
docs/config.md ("Disk use") is at most two snapshots beside the log, so the ratio stays
below 2 whatever the write pattern; before the fix, slow writes left a snapshot (and a
segment) per write, a ratio that grew with every write.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from _benchlib import SCOPE, Figure, Figures, key_name, typical_value

import evstate


def _bytes_on_disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _state_bytes(store: evstate.Store) -> int:
    total = 0
    for scope in store.list_groups()["groups"]:
        for key, raw in store._table.items(scope).items():
            total += len(scope) + len(key.encode()) + len(raw)
    return total


def _row(fid: str, name: str, path: Path, store: evstate.Store, writes: int) -> Figure:
    stats = store.stats()
    state = _state_bytes(store)
    store.close()
    disk = _bytes_on_disk(path)
    files = sum(1 for p in path.rglob("*") if p.is_file())
    reference = state + stats["log_bytes"]
    return Figure(
        fid,
        name,
        disk,
        reference,
        "bytes",
        "state + retained log",
        "<=2x (two snapshots at most beside the log)",
        disk <= 2 * reference,
        higher_is_better=False,
        detail={
            "files": files,
            "writes": writes,
            "snapshots": stats["snapshots"],
            "segments": stats["segments"],
            "log_bytes": stats["log_bytes"],
            "state_bytes": state,
        },
    )


def test_disk_use_under_slow_writes(benchmark: Any, figures: Figures, tmp_path: Path) -> None:
    path = tmp_path / "slow"
    store = evstate.open(path, save_interval_ms=100)
    big = "b" * 500_000

    def run() -> None:
        for i in range(16):
            store.set(SCOPE, "big", {"blob": big, "i": i})
            time.sleep(0.15)  # slower than save_interval_ms: a tick between writes

    benchmark.pedantic(run, rounds=1, iterations=1)
    fig = figures.add(_row("12a", "disk use, 16 slow writes of 0.5 MB", path, store, 16))
    benchmark.extra_info.update(fig.detail, ratio=fig.ratio)


def test_disk_use_under_fast_writes(benchmark: Any, figures: Figures, tmp_path: Path) -> None:
    path = tmp_path / "fast"
    store = evstate.open(path, save_interval_ms=100, fsync="never")
    writes = 200_000

    def run() -> None:
        for i in range(writes):
            store.set(SCOPE, key_name(i % 20_000), typical_value(i))
        time.sleep(0.5)  # let the background snapshotter and compaction run

    benchmark.pedantic(run, rounds=1, iterations=1)
    fig = figures.add(_row("12b", "disk use, 200k fast writes", path, store, writes))
    benchmark.extra_info.update(fig.detail, ratio=fig.ratio)
