"""Time-to-live figures (issue 14), each a ratio to a baseline measured in the same run.

14a: ``set`` with ``ttl_ms`` vs ``set`` without (file store, fsync=interval);
14b: RSS of 1M keys with a TTL vs 1M keys without (memory store; goal <= 1.3x);
14c: expiry throughput: ``expire()`` of N due keys vs ``delete`` of N keys (goal >= 100k/s);
14d: a writer's ``set`` rate while 1M keys expire in the background vs with none expiring
     (goal >= 0.5x).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from _benchlib import (
    Figure,
    Figures,
    drop_warmup,
    interleaved,
    key_name,
    median_rate,
    typical_value,
)
from bench_recovery import _probe

import evstate
from evstate.config import Config

TTL_KEYS = 5_000
TTL_ROUNDS = 15
EXPIRING = int(os.environ.get("EVSTATE_BENCH_EXPIRING", "1000000"))


def test_set_with_ttl_vs_without(benchmark: Any, figures: Figures, tmp_path: Path) -> None:
    keys = [key_name(i) for i in range(TTL_KEYS)]
    values = [typical_value(i) for i in range(TTL_KEYS)]
    store = evstate.open(tmp_path / "evstate", fsync="interval")
    plain_times: list[float] = []

    def ttl_round() -> float:
        set_ = store.set
        t0 = time.perf_counter()
        for key, value in zip(keys, values, strict=True):
            set_("ttl", key, value, ttl_ms=3_600_000)
        return time.perf_counter() - t0

    def plain_round() -> None:
        set_ = store.set
        t0 = time.perf_counter()
        for key, value in zip(keys, values, strict=True):
            set_("plain", key, value)
        plain_times.append(time.perf_counter() - t0)

    try:
        times = interleaved(benchmark, ttl_round, plain_round, rounds=TTL_ROUNDS)
    finally:
        store.close()
    with_ttl = median_rate(TTL_KEYS, times)
    plain = median_rate(TTL_KEYS, drop_warmup(plain_times))
    figures.add(
        Figure("14a", "set with ttl_ms, fsync=interval", with_ttl, plain, "ops/s", "set", "", None)
    )


def test_memory_with_ttls(figures: Figures) -> None:
    n = EXPIRING
    plain = _probe("evstate-set", str(n))
    with_ttl = _probe("evstate-set-ttl", str(n))
    mib = 2**20
    figures.add(
        Figure(
            "14b",
            f"RSS, {n / 1e6:g}M keys with a TTL (memory store)",
            with_ttl["delta"] / mib,
            plain["delta"] / mib,
            "MiB",
            "the same keys without TTL",
            "<=1.3x",
            with_ttl["delta"] <= 1.3 * plain["delta"],
            higher_is_better=False,
        )
    )


class _Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000_000

    def __call__(self) -> int:
        return self.now


def test_expiry_throughput(figures: Figures) -> None:
    n = min(EXPIRING, 200_000)
    clock = _Clock()
    store = evstate.Store(Config(store_method="in_memory"), clock=clock)
    try:
        for start in range(0, n, 10_000):
            with store.batch() as batch:
                for i in range(start, start + 10_000):
                    batch.set("expiring", key_name(i), typical_value(i), ttl_ms=1000)
                    batch.set("deleting", key_name(i), typical_value(i))
        clock.now += 2000
        t0 = time.perf_counter()
        expired = store.expire()
        expire_s = time.perf_counter() - t0
        assert expired == n
        delete = store.delete
        t0 = time.perf_counter()
        for i in range(n):
            delete("deleting", key_name(i))
        delete_s = time.perf_counter() - t0
    finally:
        store.close()
    figures.add(
        Figure(
            "14c",
            f"expiry of {n // 1000}k due keys (expire())",
            n / expire_s,
            n / delete_s,
            "ops/s",
            "delete, one call per key",
            ">=100k/s",
            n / expire_s >= 100_000,
        )
    )


def _writer_rate(store: evstate.Store, seconds: float) -> float:
    """Sets per second of one writer thread over ``seconds`` (median of 0.1 s windows)."""
    rates: list[float] = []
    set_ = store.set
    value = typical_value(1)
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(500):
            set_("writer", key_name(i % 10_000), value)
            i += 1
        rates.append(500 / (time.perf_counter() - t0))
    return statistics.median(rates)


def test_writer_rate_during_mass_expiry(figures: Figures, tmp_path: Path) -> None:
    n = EXPIRING
    store = evstate.open(tmp_path / "evstate", fsync="interval")
    try:
        for start in range(0, n, 10_000):
            with store.batch() as batch:
                for i in range(start, min(start + 10_000, n)):
                    batch.set("expiring", key_name(i), 1, ttl_ms=3_000)
        quiet = _writer_rate(store, 1.0)  # nothing due yet
        deadline = time.time() + 3.2
        time.sleep(max(0.0, deadline - time.time()))
        done = threading.Event()

        def watch() -> None:
            while store.list_keys("expiring") and not done.is_set():
                time.sleep(0.05)

        busy = _writer_rate(store, 2.0)  # while the expirer works through them
        done.set()
        expired_events = sum(1 for e in store.events(scope="expiring") if e.event_type == "deleted")
        del watch
    finally:
        store.close()
    figures.add(
        Figure(
            "14d",
            f"set rate while {n / 1e6:g}M keys expire",
            busy,
            quiet,
            "ops/s",
            "set rate, none expiring",
            ">=0.5x",
            busy >= 0.5 * quiet,
            detail={"expired_during_measurement": expired_events},
        )
    )
