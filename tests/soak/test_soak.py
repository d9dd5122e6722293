"""A bounded soak: writers, triggers, snapshots, compaction and readers, all at once.

For ``EVSTATE_SOAK_SECONDS`` (default 60, the whole test included) a file store with
``fsync: always`` takes writes from every worker of :mod:`tests.soak.workers` (three
writers with keys of their own, an incrementer of a shared key, and whatever was
registered there, e.g. server clients), while:

- triggers run: ``audit`` (every event), ``count`` and ``mirror`` (writing through
  ``event.store``: a counter and a copy of scope ``w``), ``watch`` (one key) and ``slow``;
- the background snapshotter runs every 200 ms, with a retention that compacts old
  segments (triggers pin what they still need), and a maintenance thread snapshots,
  compacts and reads ``at()``, ``history()`` and ``events()`` concurrently.

At the end: ``verify()`` is clean; every acknowledged write is present (live, and after a
reopen); every trigger saw every event, in order, with no gap; the counters written
through ``event.store`` are exact (exactly once).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import evstate
from evstate import UpdateOp
from tests.soak.workers import WORKERS, SoakContext

SECONDS = float(os.environ.get("EVSTATE_SOAK_SECONDS", "60"))
SETTLE = 8.0  # seconds kept for the final catch-up and checks
MAX_LAG = 5_000  # writers pause while a trigger is this many events behind


def _options() -> dict[str, Any]:
    return {
        "fsync": "always",
        "segment_size_bytes": 256 * 1024,
        "save_interval_ms": 200,
        "retention": {"revisions": 20_000},
    }


def _guard(errors: list[BaseException], fn: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # reported by the test, not lost in a thread
            errors.append(exc)

    return run


def test_soak(tmp_path: Path) -> None:
    started = time.monotonic()
    store = evstate.open(tmp_path, **_options())
    audit: list[int] = []
    watched: list[int] = []

    def count(event: Any) -> None:
        event.store.update("out", "w_events", [UpdateOp.increment("n", 1)])

    def mirror(event: Any) -> None:
        if event.new_value is None:
            event.store.delete("mirror", event.key)
        else:
            event.store.set("mirror", event.key, event.new_value)

    def slow(event: Any) -> None:
        if event.revision % 500 == 0:
            time.sleep(0.002)

    store.trigger("audit", lambda e: audit.append(e.revision), start="earliest")
    store.trigger("count", count, scope="w", start="earliest")
    store.trigger("mirror", mirror, scope="w", start="earliest")
    store.trigger("watch", lambda e: watched.append(e.revision), scope="shared", key="counter")
    store.trigger("slow", slow, start="earliest")

    ctx = SoakContext(store=store, stop=threading.Event(), seed=int(time.time()))
    errors: list[BaseException] = []
    reads = {"at": 0, "history": 0, "events": 0, "snapshots": 0, "compactions": 0}

    def monitor() -> None:
        while not ctx.stop.wait(0.02):
            lag = max(s["lag"] for s in store.trigger_status().values())
            if lag > MAX_LAG:
                ctx.backlog.set()
            else:
                ctx.backlog.clear()

    def maintenance() -> None:
        rng = random.Random(ctx.seed)
        while not ctx.stop.wait(0.05):
            head = store.revision
            horizon = store.stats()["horizon_revision"]
            target = rng.randint(horizon, head)
            try:
                view = store.at(target)
            except evstate.HistoryCompactedError:
                continue  # compacted between the two calls
            assert view.revision == target
            reads["at"] += 1
            key = f"w{rng.randint(1, 3)}-{rng.randrange(64)}"
            oldest = store.stats()["oldest_revision"]
            try:
                revisions = [e.revision for e in store.history("w", key, since=oldest)]
                assert revisions == sorted(revisions)
                reads["history"] += 1
                window = list(store.events(max(oldest, head - 50), head))
                assert [e.revision for e in window] == list(range(max(oldest, head - 50), head + 1))
                reads["events"] += 1
            except evstate.HistoryCompactedError:
                pass
            if reads["compactions"] == 0 or rng.random() < 0.1:
                store.snapshot()
                reads["snapshots"] += 1
                store.compact()
                reads["compactions"] += 1

    threads = [threading.Thread(target=_guard(errors, lambda w=w: w(ctx))) for w in WORKERS]
    threads += [
        threading.Thread(target=_guard(errors, monitor)),
        threading.Thread(target=_guard(errors, maintenance)),
    ]
    for thread in threads:
        thread.start()
    deadline = started + max(SECONDS - SETTLE, 1.0)
    while time.monotonic() < deadline and not errors:
        time.sleep(0.1)
    ctx.stop.set()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    assert not errors, errors

    # Every trigger catches up and saw every event.
    def behind() -> bool:
        head = store.revision
        return any(s["cursor"] != head for s in store.trigger_status().values())

    catch_up = time.monotonic() + 60
    while behind():  # count's and mirror's batches add events: wait until it settles
        store.wait_for_triggers(timeout=60)
        assert time.monotonic() < catch_up, store.trigger_status()
    head = store.revision
    assert audit == list(range(1, head + 1)), "audit: an event missed, repeated or reordered"
    assert len(watched) == ctx.increments and watched == sorted(set(watched))
    status = store.trigger_status()
    assert all(s["cursor"] == head and s["parked"] == 0 for s in status.values()), status
    assert store.get("out", "w_events") == {"n": ctx.writes["w"]}  # exactly once
    live_w = store.list("w")
    assert store.list("mirror") == live_w  # the projection equals its source

    # Every acknowledged write is present; verify() is clean.
    expected = {key: value for (scope, key), value in ctx.acked.items() if value is not None}
    assert {k: v for k, v in live_w.items() if k in expected} == expected
    assert set(live_w) - set(expected) == set()
    extra = {(s, k): v for (s, k), v in ctx.acked.items() if s != "w"}
    for (scope, key), value in extra.items():
        assert store.get(scope, key) == value
    assert store.get("shared", "counter") == {"n": ctx.increments}
    assert store.verify() == []
    stats = store.stats()
    assert stats["snapshots"] >= 1
    store.close()

    with evstate.open(tmp_path, **_options()) as reopened:
        assert reopened.revision == head
        assert reopened.list("w") == live_w
        assert reopened.get("shared", "counter") == {"n": ctx.increments}
        assert reopened.verify() == []
        assert all(s["cursor"] == head for s in reopened.trigger_status().values())

    elapsed = time.monotonic() - started
    print(
        f"soak: {head} events in {elapsed:.1f} s, {ctx.writes} writes, "
        f"{ctx.increments} increments, reads {reads}, compacted to revision "
        f"{stats['horizon_revision']}"
    )
    assert reads["at"] > 0 and reads["compactions"] > 0
    assert elapsed < SECONDS + 30
