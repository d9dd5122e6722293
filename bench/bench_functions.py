"""Figures of the iii state worker's functions and batches (issue 13).

13a: ``compare_and_set`` (every call swaps) vs ``set`` on the same keys, fsync=interval;
13b: ``list_entries`` pages of 100 on a 1M-key scope vs sqlite3 keyset pagination
     (``WHERE key > ? ORDER BY key LIMIT 100``) over the same rows;
13c: a 100-key ``batch()`` vs 100 separate ``set`` calls, fsync=always (keys/s).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import cbor2
from _benchlib import (
    SCOPE,
    Figure,
    Figures,
    drop_warmup,
    interleaved,
    key_name,
    median_rate,
    typical_value,
)

import evstate

CAS_KEYS = 2_000
CAS_ROUNDS = 15


def test_compare_and_set_vs_set(benchmark: Any, figures: Figures, tmp_path: Path) -> None:
    keys = [key_name(i) for i in range(CAS_KEYS)]
    store = evstate.open(tmp_path / "evstate", fsync="interval")
    for i, key in enumerate(keys):
        store.set(SCOPE, key, {"n": 0, "v": typical_value(i)})
        store.set("plain", key, {"n": 0, "v": typical_value(i)})
    counter = {"cas": 0, "set": 0}
    set_times: list[float] = []
    values = [typical_value(i) for i in range(CAS_KEYS)]

    def cas_round() -> float:
        n = counter["cas"]
        counter["cas"] += 1
        cas = store.compare_and_set
        t0 = time.perf_counter()
        for key, value in zip(keys, values, strict=True):
            if not cas(SCOPE, key, {"n": n, "v": value}, {"n": n + 1, "v": value})["swapped"]:
                raise AssertionError("every compare-and-set of the round must swap")
        return time.perf_counter() - t0

    def set_round() -> None:
        n = counter["set"]
        counter["set"] += 1
        set_ = store.set
        t0 = time.perf_counter()
        for key, value in zip(keys, values, strict=True):
            set_("plain", key, {"n": n + 1, "v": value})
        set_times.append(time.perf_counter() - t0)

    try:
        cas_times = interleaved(benchmark, cas_round, set_round, rounds=CAS_ROUNDS)
    finally:
        store.close()
    cas = median_rate(CAS_KEYS, cas_times)
    plain = median_rate(CAS_KEYS, drop_warmup(set_times))
    figures.add(
        Figure(
            "13a",
            "compare_and_set (swaps), fsync=interval",
            cas,
            plain,
            "ops/s",
            "evstate set",
            ">=0.8x set",
            cas / plain >= 0.8,
        )
    )


LISTED_KEYS = int(os.environ.get("EVSTATE_BENCH_LIST_KEYS", "1000000"))
PAGE = 100
PAGES_PER_ROUND = 200
LIST_ROUNDS = 11


def test_list_entries_pages(benchmark: Any, figures: Figures, tmp_path: Path) -> None:
    store = evstate.open()  # the listing path is the same for every store kind
    conn = sqlite3.connect(tmp_path / "list.db")
    conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")
    chunk = 10_000
    for start in range(0, LISTED_KEYS, chunk):
        rows = [(key_name(i), typical_value(i)) for i in range(start, start + chunk)]
        with store.batch() as batch:
            for key, value in rows:
                batch.set(SCOPE, key, value)
        conn.executemany("INSERT INTO kv VALUES (?, ?)", [(k, cbor2.dumps(v)) for k, v in rows])
    conn.commit()
    t0 = time.perf_counter()
    page = store.list_entries(SCOPE, limit=PAGE)
    first_page_ms = (time.perf_counter() - t0) * 1000
    state: dict[str, Any] = {"page": page, "after": ""}
    sq_times: list[float] = []

    def evstate_round() -> float:
        current = state["page"]
        list_entries = store.list_entries
        t0 = time.perf_counter()
        for _ in range(PAGES_PER_ROUND):
            if current["done"]:
                current = list_entries(SCOPE, limit=PAGE)
            else:
                current = list_entries(SCOPE, current["next_cursor"], limit=PAGE)
        elapsed = time.perf_counter() - t0
        state["page"] = current
        return elapsed

    def sqlite_round() -> None:
        after = state["after"]
        execute, loads = conn.execute, cbor2.loads
        t0 = time.perf_counter()
        for _ in range(PAGES_PER_ROUND):
            rows = execute(
                "SELECT key, value FROM kv WHERE key > ? ORDER BY key LIMIT ?", (after, PAGE)
            ).fetchall()
            entries = [[k, loads(v)] for k, v in rows]
            after = entries[-1][0] if len(entries) == PAGE else ""
        sq_times.append(time.perf_counter() - t0)
        state["after"] = after

    try:
        ev_times = interleaved(benchmark, evstate_round, sqlite_round, rounds=LIST_ROUNDS)
    finally:
        store.close()
        conn.close()
    ev = median_rate(PAGES_PER_ROUND, ev_times)
    sq = median_rate(PAGES_PER_ROUND, drop_warmup(sq_times))
    figures.add(
        Figure(
            "13b",
            f"list_entries pages of {PAGE}, {LISTED_KEYS // 1000}k-key scope",
            ev,
            sq,
            "pages/s",
            "sqlite3 keyset pages",
            "",
            None,
            detail={"first_page_ms": round(first_page_ms, 1)},
        )
    )


BATCH_KEYS = 100
BATCH_ROUNDS = 15


def test_batch_vs_separate_sets_fsync_always(
    benchmark: Any, figures: Figures, tmp_path: Path
) -> None:
    keys = [key_name(i) for i in range(BATCH_KEYS)]
    values = [typical_value(i) for i in range(BATCH_KEYS)]
    store = evstate.open(tmp_path / "evstate", fsync="always")
    single_times: list[float] = []

    def batch_round() -> float:
        t0 = time.perf_counter()
        with store.batch() as batch:
            for key, value in zip(keys, values, strict=True):
                batch.set(SCOPE, key, value)
        return time.perf_counter() - t0

    def single_round() -> None:
        set_ = store.set
        t0 = time.perf_counter()
        for key, value in zip(keys, values, strict=True):
            set_("single", key, value)
        single_times.append(time.perf_counter() - t0)

    try:
        times = interleaved(benchmark, batch_round, single_round, rounds=BATCH_ROUNDS)
    finally:
        store.close()
    batched = median_rate(BATCH_KEYS, times)
    single = median_rate(BATCH_KEYS, drop_warmup(single_times))
    figures.add(
        Figure(
            "13c",
            f"{BATCH_KEYS}-key batch vs {BATCH_KEYS} sets, fsync=always (keys/s)",
            batched,
            single,
            "ops/s",
            f"{BATCH_KEYS} separate sets",
            "",
            None,  # the ratio is mostly this disk's fsync time: context, no target
        )
    )
