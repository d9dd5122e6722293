"""Web console and ``/metrics`` figures (issue 15): server time of a page, measured over HTTP.

Every figure is the time from sending the request to having read the whole response, with
``http.client`` on loopback against ``evstate serve`` running in this process
(``BackgroundServer``), over a file store holding the session's 1M-event log (one key each
in ``users``) plus a hot key with 10,000 events. No browser: the figure is the server's
time (the store calls, rendering, the socket), not a browser's layout.

- 17a: ``GET /scopes/users``: the first page (100 keys) of a scope of 1M keys, vs the store
  call it is built from, ``list_entries(users, limit=100)``, in the same run. Each round
  first writes one event elsewhere, so the console cannot answer from the page it keeps per
  revision: every round lists the scope anew. Goal: under 300 ms.
- 17b: ``GET /scopes/hot/keys/k``: the key page of a key with 10,000 events (its value,
  TTL, event count, slider, and the newest 50 events with their diffs), vs the store call
  it is built from, ``history(hot, k)``. Goal: under 300 ms.
- 17c: ``GET /metrics`` with 100 triggers registered, vs ``stats()`` plus
  ``trigger_status()`` (what the scrape reads). Context.

``EVSTATE_BENCH_EVENTS`` shrinks the scope (the shared log), ``EVSTATE_BENCH_HISTORY`` the
hot key's events, for a trial run.
"""

from __future__ import annotations

import http.client
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _benchlib import NO_SNAPSHOTS_MS, SCOPE, EventLog, Figure, Figures, drop_warmup, interleaved

import evstate
from evstate.server.app import BackgroundServer

HISTORY_EVENTS = int(os.environ.get("EVSTATE_BENCH_HISTORY", "10000"))
TRIGGERS = 100
ROUNDS = 7
GOAL_MS = 300.0
MS = 1000.0


class Served:
    """The store and its server; :meth:`fetch` times one GET."""

    def __init__(self, store: evstate.Store, background: BackgroundServer) -> None:
        self.store = store
        self.background = background
        url = background.server.console_url or ""
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        self.host, self.port = host, int(port)

    def fetch(self, path: str) -> tuple[float, int, int]:
        """(seconds, status, body bytes) of ``GET path``: request sent to body read."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.connect()  # the TCP handshake is not the server's time
            t0 = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - t0
        finally:
            conn.close()
        return elapsed, response.status, len(body)


@pytest.fixture(scope="module")
def served(event_log: EventLog, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    path = str(tmp_path_factory.mktemp("console") / "store")
    shutil.copytree(event_log.path, path, ignore=shutil.ignore_patterns("LOCK"))
    store = evstate.open(path, fsync="never", save_interval_ms=NO_SNAPSHOTS_MS)
    for i in range(HISTORY_EVENTS):
        store.set("hot", "k", {"n": i, "status": "active" if i % 2 else "idle", "tags": ["a"]})
    for i in range(TRIGGERS):
        store.trigger(f"projection-{i:03d}", lambda event: None, scope="projections")
    background = BackgroundServer(store).start()
    try:
        yield Served(store, background)
    finally:
        background.stop(grace=2.0)
        store.close()


def _measure(
    benchmark: Any,
    page: Callable[[], float],
    baseline: Callable[[], object],
) -> tuple[list[float], list[float]]:
    """Interleaved rounds of the page (timed by ``page``) and of the baseline store call."""
    base_times: list[float] = []

    def base_round() -> None:
        t0 = time.perf_counter()
        baseline()
        base_times.append(time.perf_counter() - t0)

    page_times = interleaved(benchmark, page, base_round, rounds=ROUNDS)
    return page_times, drop_warmup(base_times)


def _figure(
    figures: Figures,
    benchmark: Any,
    fid: str,
    name: str,
    page_times: list[float],
    base_times: list[float],
    baseline_name: str,
    *,
    goal: bool,
    detail: dict[str, Any],
) -> None:
    page_ms = statistics.median(page_times) * MS
    base_ms = statistics.median(base_times) * MS
    fig = figures.add(
        Figure(
            fid,
            name,
            page_ms,
            base_ms,
            "ms",
            baseline_name,
            f"<{GOAL_MS:.0f} ms" if goal else "",
            page_ms < GOAL_MS if goal else None,
            higher_is_better=False,
            detail={
                **detail,
                "page_s": sorted(page_times),
                "baseline_s": sorted(base_times),
            },
        )
    )
    benchmark.extra_info.update(fig.detail, ratio=fig.ratio)


def test_scope_page_of_a_million_keys(benchmark: Any, figures: Figures, served: Served) -> None:
    store = served.store
    keys = store.stats()["keys"] - 1  # the hot key is in another scope
    tick = [0]
    sizes: list[int] = []

    def page() -> float:
        tick[0] += 1
        store.set("bench", "tick", tick[0])  # a new revision: the page is listed anew
        elapsed, status, size = served.fetch(f"/scopes/{SCOPE}")
        assert status == 200, status
        sizes.append(size)
        return elapsed

    def baseline() -> None:
        page = store.list_entries(SCOPE, None, 100, 8_000_000)
        assert page["total"] == keys

    page_times, base_times = _measure(benchmark, page, baseline)
    _figure(
        figures,
        benchmark,
        "17a",
        f"console scope page, first 100 of {keys / 1e6:g}M keys",
        page_times,
        base_times,
        "list_entries() first page",
        goal=True,
        detail={"keys": keys, "page_bytes": max(sizes)},
    )


def test_key_page_with_ten_thousand_events(
    benchmark: Any, figures: Figures, served: Served
) -> None:
    store = served.store
    sizes: list[int] = []

    def page() -> float:
        elapsed, status, size = served.fetch("/scopes/hot/keys/k")
        assert status == 200, status
        sizes.append(size)
        return elapsed

    def baseline() -> None:
        assert len(store.history("hot", "k")) == HISTORY_EVENTS

    page_times, base_times = _measure(benchmark, page, baseline)
    _figure(
        figures,
        benchmark,
        "17b",
        f"console key page, a key with {HISTORY_EVENTS:,} events",
        page_times,
        base_times,
        "history() of that key",
        goal=True,
        detail={"events": HISTORY_EVENTS, "page_bytes": max(sizes)},
    )


def test_metrics_scrape_with_a_hundred_triggers(
    benchmark: Any, figures: Figures, served: Served
) -> None:
    store = served.store
    sizes: list[int] = []

    def scrape() -> float:
        elapsed, status, size = served.fetch("/metrics")
        assert status == 200, status
        sizes.append(size)
        return elapsed

    def baseline() -> None:
        store.stats()
        assert len(store.trigger_status()) == TRIGGERS

    page_times, base_times = _measure(benchmark, scrape, baseline)
    _figure(
        figures,
        benchmark,
        "17c",
        f"/metrics scrape, {TRIGGERS} triggers",
        page_times,
        base_times,
        "stats() + trigger_status()",
        goal=False,
        detail={"triggers": TRIGGERS, "scrape_bytes": max(sizes)},
    )
