"""Write-path figures (issue 2 section 7): 1 (set, fsync=interval vs sqlite3), 2 (set, fsync=always,
1 thread vs a raw write+fdatasync loop), 3 (set, fsync=always, 16 threads vs 1 thread) and
the context row c1 (plain dict set).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from _benchlib import (
    SCOPE,
    Figure,
    Figures,
    drop_warmup,
    frame,
    interleaved,
    key_name,
    log_bytes,
    median_rate,
    ops_per_s,
    typical_value,
)

import evstate

KEY_SPACE = 100_000  # keys of figure 1's overwrite workload
DISTINCT_VALUES = 1_000


# ---- figure 1: fsync=interval vs sqlite3 WAL/NORMAL, plus the dict context row -----------
#
# Two workloads, each judged against the target: "insert" (every set creates a new key) and
# "overwrite" (the 100k keys exist already, every set replaces a value with a different one).
# The mix matters: sqlite3 overwrites a same-size value in place about 2x faster than it
# inserts, while an evstate overwrite logs (and returns) the old value as well.

SET_ROUND = 10_000  # sets per round
SET_ROUNDS = 21


def _sqlite(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE kv (scope TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,"
        " PRIMARY KEY (scope, key)) WITHOUT ROWID"
    )
    conn.commit()
    return conn


_UPSERT = (
    "INSERT INTO kv (scope, key, value) VALUES (?, ?, ?)"
    " ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value"
)


@pytest.mark.parametrize("workload", ["insert", "overwrite"])
def test_set_fsync_interval(
    benchmark: Any, figures: Figures, tmp_path: Path, workload: str
) -> None:
    rounds_total = SET_ROUNDS + 1  # + the warm-up round
    n_keys = KEY_SPACE if workload == "overwrite" else SET_ROUND * rounds_total
    keys = [key_name(i) for i in range(n_keys)]
    distinct = [typical_value(i) for i in range(DISTINCT_VALUES)]
    store = evstate.open(tmp_path / "evstate", fsync="interval")
    conn = _sqlite(tmp_path / "sqlite.db")
    plain: dict[str, dict[str, Any]] = {SCOPE: {}}
    if workload == "overwrite":  # untimed: create the keys everywhere
        for i, k in enumerate(keys):
            v = distinct[i % DISTINCT_VALUES]
            store.set(SCOPE, k, v)
            conn.execute(_UPSERT, (SCOPE, k, cbor2.dumps(v)))
            plain[SCOPE][k] = v
        conn.commit()
    done = {"evstate": 0, "sqlite": 0, "dict": 0}  # rounds run per side
    sq_times: list[float] = []
    dict_times: list[float] = []

    def batch(side: str) -> list[tuple[str, Any]]:
        """The (key, value) pairs of a side's next round; every round changes the values."""
        r = done[side]
        done[side] += 1
        start = (r * SET_ROUND) % n_keys
        shift = 1 + r * 7  # never the value a key was created with
        return [
            (keys[start + j], distinct[(start + j + shift) % DISTINCT_VALUES])
            for j in range(SET_ROUND)
        ]

    def evstate_round() -> float:
        pairs = batch("evstate")
        set_ = store.set
        t0 = time.perf_counter()
        for k, v in pairs:
            set_(SCOPE, k, v)
        return time.perf_counter() - t0

    def baseline_round() -> None:
        pairs = batch("sqlite")
        execute, commit, dumps = conn.execute, conn.commit, cbor2.dumps
        t0 = time.perf_counter()
        for k, v in pairs:
            execute(_UPSERT, (SCOPE, k, dumps(v)))
            commit()
        sq_times.append(time.perf_counter() - t0)
        pairs = batch("dict")
        inner = plain[SCOPE]
        t0 = time.perf_counter()
        for k, v in pairs:
            inner[k] = v
        dict_times.append(time.perf_counter() - t0)

    try:
        ev_times = interleaved(benchmark, evstate_round, baseline_round, rounds=SET_ROUNDS)
        revision = store.revision
    finally:
        store.close()
        conn.close()
    expected = (n_keys if workload == "overwrite" else 0) + SET_ROUND * rounds_total
    assert revision == expected, (revision, expected)
    ev = median_rate(SET_ROUND, ev_times)
    sq = median_rate(SET_ROUND, drop_warmup(sq_times))
    dc = median_rate(SET_ROUND, drop_warmup(dict_times))
    fid, label = ("1a", "new keys") if workload == "insert" else ("1b", "overwrite 100k keys")
    fig = figures.add(
        Figure(
            fid,
            f"set, fsync=interval, {label}",
            ev,
            sq,
            "ops/s",
            "sqlite3 WAL/NORMAL",
            ">=100k/s and >=4x",
            ev >= 100_000 and ev / sq >= 4.0,
            detail={"round_ops": SET_ROUND, "rounds": len(ev_times), "workload": workload},
        )
    )
    if workload == "overwrite":
        figures.add(Figure("c1", "set, overwrite (context)", ev, dc, "ops/s", "dict", "", None))
    benchmark.extra_info.update(
        evstate_ops_s=ev, sqlite_ops_s=sq, dict_ops_s=dc, ratio_vs_sqlite=fig.ratio
    )


# ---- figure 2: fsync=always, 1 thread, vs a raw write + fdatasync loop --------------------

ALWAYS_KEYS = 1_000  # keys per round (overwritten every round, so records carry old+new)
ALWAYS_ROUNDS = 15


def test_set_fsync_always_1_thread(benchmark: Any, figures: Figures, tmp_path: Path) -> None:
    keys = [key_name(i) for i in range(ALWAYS_KEYS)]
    values = [typical_value(i) for i in range(ALWAYS_KEYS)]
    path = tmp_path / "evstate"
    store = evstate.open(path, fsync="always")
    # Prime: create every key, then measure the on-disk size of one overwrite record.
    for k, v in zip(keys, values, strict=True):
        store.set(SCOPE, k, v)
    before = log_bytes(str(path))
    for k, v in zip(keys[:100], values[:100], strict=True):
        store.set(SCOPE, k, v)
    record_size = (log_bytes(str(path)) - before) // 100
    payload = os.urandom(record_size - 8)  # framed below to exactly record_size bytes

    raw_fd = os.open(tmp_path / "raw.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(raw_fd, b"\0" * 24)  # a segment header's worth, like a fresh segment
    os.fdatasync(raw_fd)
    raw_times: list[float] = []

    def evstate_round() -> float:
        set_ = store.set
        t0 = time.perf_counter()
        for k, v in zip(keys, values, strict=True):
            set_(SCOPE, k, v)
        return time.perf_counter() - t0

    def raw_round() -> None:
        write, sync = os.write, os.fdatasync
        t0 = time.perf_counter()
        for _ in range(ALWAYS_KEYS):
            write(raw_fd, frame(payload))
            sync(raw_fd)
        raw_times.append(time.perf_counter() - t0)

    try:
        ev_times = interleaved(benchmark, evstate_round, raw_round, rounds=ALWAYS_ROUNDS)
    finally:
        store.close()
        os.close(raw_fd)
    ev = median_rate(ALWAYS_KEYS, ev_times)
    raw = median_rate(ALWAYS_KEYS, drop_warmup(raw_times))
    fig = figures.add(
        Figure(
            "2",
            "set, fsync=always, 1 thread",
            ev,
            raw,
            "ops/s",
            f"raw write+fdatasync ({record_size} B)",
            ">=0.8x",
            ev / raw >= 0.8,
            detail={"record_bytes": record_size, "round_ops": ALWAYS_KEYS},
        )
    )
    benchmark.extra_info.update(
        evstate_ops_s=ev, raw_ops_s=raw, record_bytes=record_size, ratio=fig.ratio
    )


# ---- figure 3: fsync=always, 16 threads (group commit) vs 1 thread ------------------------

THREADS = 16
PER_THREAD = 250  # 16 x 250 = 4000 sets per 16-thread round
SOLO_OPS = 1_000  # sets per 1-thread round
GROUP_ROUNDS = 15


class _SyncCounter:
    """Counts ``os.fdatasync`` calls (evstate's DiskIO looks it up at call time)."""

    def __init__(self, real: Callable[[int], None]) -> None:
        self.real = real
        self.calls = 0

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.real(fd)


def test_set_fsync_always_16_threads(
    benchmark: Any, figures: Figures, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = _SyncCounter(os.fdatasync)
    monkeypatch.setattr(os, "fdatasync", counter)
    store = evstate.open(tmp_path / "evstate", fsync="always")
    thread_keys = [[f"t{t}_{j}" for j in range(PER_THREAD)] for t in range(THREADS)]
    solo_keys = [f"solo_{j}" for j in range(SOLO_OPS)]
    values = [typical_value(i) for i in range(max(PER_THREAD, SOLO_OPS))]
    for ks in [solo_keys, *thread_keys]:  # create every key: rounds then overwrite
        for k, v in zip(ks, values, strict=False):
            store.set(SCOPE, k, v)

    solo_times: list[float] = []
    syncs = {"solo": 0, "group": 0}
    errors: list[BaseException] = []
    state: dict[str, Any] = {}

    def writer(ks: list[str], barrier: threading.Barrier) -> None:
        set_ = store.set
        barrier.wait()
        try:
            for k, v in zip(ks, values, strict=False):
                set_(SCOPE, k, v)
        except BaseException as exc:  # reported after the round
            errors.append(exc)

    def setup() -> None:
        # Baseline: one thread, interleaved with the 16-thread rounds.
        n0 = counter.calls
        set_ = store.set
        t0 = time.perf_counter()
        for k, v in zip(solo_keys, values, strict=False):
            set_(SCOPE, k, v)
        solo_times.append(time.perf_counter() - t0)
        syncs["solo"] += counter.calls - n0
        # Start the writers; they wait at the barrier until the timed part releases them.
        barrier = threading.Barrier(THREADS + 1)
        threads = [
            threading.Thread(target=writer, args=(ks, barrier), daemon=True) for ks in thread_keys
        ]
        for t in threads:
            t.start()
        while barrier.n_waiting < THREADS:
            time.sleep(0.001)
        state["barrier"], state["threads"], state["n0"] = barrier, threads, counter.calls

    def group_round() -> float:
        t0 = time.perf_counter()
        state["barrier"].wait()
        for t in state["threads"]:
            t.join()
        elapsed = time.perf_counter() - t0
        syncs["group"] += counter.calls - state["n0"]
        return elapsed

    group_times: list[float] = []

    def target() -> None:
        group_times.append(group_round())

    try:
        benchmark.pedantic(target, setup=setup, rounds=GROUP_ROUNDS, warmup_rounds=1)
    finally:
        store.close()
    assert not errors, errors
    total = THREADS * PER_THREAD
    group = median_rate(total, drop_warmup(group_times))
    solo = median_rate(SOLO_OPS, drop_warmup(solo_times))
    n_rounds = len(group_times)
    per_sync_group = total * n_rounds / max(syncs["group"], 1)
    per_sync_solo = SOLO_OPS * len(solo_times) / max(syncs["solo"], 1)
    fig = figures.add(
        Figure(
            "3",
            f"set, fsync=always, {THREADS} threads",
            group,
            solo,
            "ops/s",
            "evstate 1 thread",
            ">=3x",
            group / solo >= 3.0,
            detail={
                "records_per_fdatasync_16_threads": round(per_sync_group, 2),
                "records_per_fdatasync_1_thread": round(per_sync_solo, 2),
                "round_ops": total,
                "best_16_thread_ops_s": ops_per_s(total, min(drop_warmup(group_times))),
                "median_16_thread_ops_s": group,
                "rounds": len(group_times),
            },
        )
    )
    benchmark.extra_info.update(fig.detail, ratio=fig.ratio, solo_ops_s=solo)


# ---- 16e: set, fsync=interval, vs a raw Python loop that encodes and appends the record ----

CEILING_KEYS = 10_000
CEILING_ROUNDS = 11


def test_set_vs_python_ceiling(benchmark: Any, figures: Figures, tmp_path: Path) -> None:
    """What a Python store could at best do per ``set``: encode the value and the record
    (CBOR, as evstate's format), frame it with its checksum and ``write(2)`` it; no
    validation, no table, no index, no lock."""
    keys = [key_name(i) for i in range(CEILING_KEYS)]
    values = [typical_value(i) for i in range(CEILING_KEYS)]
    store = evstate.open(tmp_path / "evstate", fsync="interval")
    fd = os.open(tmp_path / "raw.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    raw_times: list[float] = []
    revision = [0]

    def evstate_round() -> float:
        set_ = store.set
        t0 = time.perf_counter()
        for k, v in zip(keys, values, strict=True):
            set_(SCOPE, k, v)
        return time.perf_counter() - t0

    def raw_round() -> None:
        dumps, write, stamp = cbor2.dumps, os.write, time.time_ns
        rev = revision[0]
        t0 = time.perf_counter()
        for k, v in zip(keys, values, strict=True):
            rev += 1
            record = dumps([1, rev, stamp() // 1_000_000, 2, SCOPE, k, None, dumps(v)])
            write(fd, frame(record))
        raw_times.append(time.perf_counter() - t0)
        revision[0] = rev

    try:
        ev_times = interleaved(benchmark, evstate_round, raw_round, rounds=CEILING_ROUNDS)
    finally:
        store.close()
        os.close(fd)
    ev = median_rate(CEILING_KEYS, ev_times)
    raw = median_rate(CEILING_KEYS, drop_warmup(raw_times))
    figures.add(
        Figure(
            "16e",
            "set, fsync=interval, vs the Python ceiling",
            ev,
            raw,
            "ops/s",
            "raw loop: cbor2 + frame + write(2)",
            "",
            None,
        )
    )
