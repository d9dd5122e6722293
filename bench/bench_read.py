"""Read-path figures (issue 2 section 7): 4 (get of a typical value vs lmdb get + cbor2.loads) and
the context row c2 (plain dict get).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import cbor2
import lmdb
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

KEYS = 100_000
GET_ROUND = 10_000
GET_ROUNDS = 31


def test_get_typical(benchmark: Any, figures: Figures, tmp_path: Path) -> None:
    store = evstate.open(tmp_path / "evstate", fsync="never")
    env = lmdb.open(str(tmp_path / "lmdb"), map_size=1 << 30, sync=False, metasync=False)
    plain: dict[str, dict[str, Any]] = {SCOPE: {}}
    with env.begin(write=True) as txn:
        for i in range(KEYS):
            k, v = key_name(i), typical_value(i)
            store.set(SCOPE, k, v)
            txn.put(f"{SCOPE}\0{k}".encode(), cbor2.dumps(v))
            plain[SCOPE][k] = v
    order = list(range(KEYS))
    random.Random(7).shuffle(order)
    keys = [key_name(i) for i in order]
    lkeys = [f"{SCOPE}\0{k}".encode() for k in keys]
    pos = {"evstate": 0, "lmdb": 0, "lmdb_shared": 0, "dict": 0}
    times: dict[str, list[float]] = {"lmdb": [], "lmdb_shared": [], "dict": []}

    def batch(side: str, source: list[Any]) -> list[Any]:
        start = pos[side]
        pos[side] = (start + GET_ROUND) % KEYS
        return source[start : start + GET_ROUND]

    def evstate_round() -> float:
        ks = batch("evstate", keys)
        get = store.get
        t0 = time.perf_counter()
        for k in ks:
            get(SCOPE, k)
        return time.perf_counter() - t0

    def baseline_round() -> None:
        loads = cbor2.loads
        # lmdb, one read transaction per get: a standalone read, like Store.get.
        ks = batch("lmdb", lkeys)
        begin = env.begin
        t0 = time.perf_counter()
        for k in ks:
            with begin() as txn:
                loads(txn.get(k))
        times["lmdb"].append(time.perf_counter() - t0)
        # lmdb, one read transaction for the whole round (reported in the detail only).
        ks = batch("lmdb_shared", lkeys)
        t0 = time.perf_counter()
        with begin() as txn:
            txn_get = txn.get
            for k in ks:
                loads(txn_get(k))
        times["lmdb_shared"].append(time.perf_counter() - t0)
        # Plain dict of dicts: returns the stored object itself (no copy, no decode).
        ks = batch("dict", keys)
        t0 = time.perf_counter()
        for k in ks:
            plain[SCOPE][k]
        times["dict"].append(time.perf_counter() - t0)

    try:
        assert store.get(SCOPE, keys[0]) == plain[SCOPE][keys[0]]
        ev_times = interleaved(benchmark, evstate_round, baseline_round, rounds=GET_ROUNDS)
    finally:
        store.close()
        env.close()
    ev = median_rate(GET_ROUND, ev_times)
    lm = median_rate(GET_ROUND, drop_warmup(times["lmdb"]))
    lm_shared = median_rate(GET_ROUND, drop_warmup(times["lmdb_shared"]))
    dc = median_rate(GET_ROUND, drop_warmup(times["dict"]))
    fig = figures.add(
        Figure(
            "4",
            "get, typical value",
            ev,
            lm,
            "ops/s",
            "lmdb get+cbor2.loads",
            ">=500k/s and >=2x",
            ev >= 500_000 and ev / lm >= 2.0,
            detail={
                "lmdb_shared_txn_ops_s": lm_shared,
                "ratio_vs_lmdb_shared_txn": ev / lm_shared,
                "round_ops": GET_ROUND,
                "keys": KEYS,
            },
        )
    )
    figures.add(Figure("c2", "get, typical value (context)", ev, dc, "ops/s", "dict", "", None))
    benchmark.extra_info.update(fig.detail, evstate_ops_s=ev, lmdb_ops_s=lm, ratio=fig.ratio)
