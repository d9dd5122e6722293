"""``/metrics``: the ``evstate_*`` families, read back with prometheus-client's own parser."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

import evstate
from evstate.timings import FSYNC_SECONDS
from tests.console.conftest import Console
from tests.console.test_http import get
from tests.server.harness import Raw, wait_until


def scrape(console: Console) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    status, headers, body = get(console, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        assert family.name.startswith("evstate_"), family.name
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_count_calls_errors_and_describe_the_store(
    make_console: Callable[..., Console], tmp_path: Path
) -> None:
    store = evstate.open(tmp_path / "store", max_value_bytes=64)  # fsync: always
    fsyncs_before = FSYNC_SECONDS.read().count
    store.trigger("audit", lambda event: None, scope="orders")
    store.trigger("broken", _fail, scope="orders")
    console = make_console(store)
    client = Raw(console.ws_url)
    client.call("state::set", {"scope": "orders", "key": "o1", "value": {"n": 1}})
    client.call("state::get", {"scope": "orders", "key": "o1"})
    client.call("state::get", {"scope": "orders", "key": "o2"})
    client.call("state::update", {"scope": "orders", "key": "o1", "ops": []})
    too_big = client.call("state::set", {"scope": "orders", "key": "o3", "value": "x" * 100})
    assert too_big["error"]["code"] == "VALUE_TOO_LARGE"
    wait_until(lambda: store.trigger_status()["broken"]["parked"] == 2, what="parking")
    m = scrape(console)
    assert m[("evstate_reads_total", (("function", "get"),))] == 2
    assert m[("evstate_writes_total", (("function", "set"),))] == 2
    assert m[("evstate_writes_total", (("function", "update"),))] == 1
    assert m[("evstate_errors_total", (("code", "VALUE_TOO_LARGE"),))] == 1
    assert m[("evstate_revision", ())] == 2
    assert m[("evstate_log_bytes", ())] > 0
    assert m[("evstate_keys", ())] == 1
    assert m[("evstate_fsync_seconds_count", ())] >= fsyncs_before + 2
    assert (
        m[("evstate_fsync_seconds_bucket", (("le", "+Inf"),))]
        == m[("evstate_fsync_seconds_count", ())]
    )
    assert ("evstate_snapshot_duration_seconds_count", ()) in m
    assert m[("evstate_trigger_parked_events", (("trigger", "broken"),))] == 2
    assert m[("evstate_trigger_lag_events", (("trigger", "audit"),))] == 0
    assert m[("evstate_trigger_cursor", (("trigger", "audit"),))] == 2
    assert m[("evstate_parked_events", ())] == 2
    assert m[("evstate_connections", (("kind", "worker"),))] == 1
    assert m[("evstate_store_failed", ())] == 0
    assert m[("evstate_process_resident_memory_bytes", ())] > 0
    client.close()
    wait_until(
        lambda: scrape(console)[("evstate_connections", (("kind", "worker"),))] == 0,
        what="the worker's disconnect",
    )


def _fail(event: Any) -> None:
    raise RuntimeError("no")


def test_snapshot_age_follows_the_snapshots(
    make_console: Callable[..., Console], tmp_path: Path
) -> None:
    store = evstate.open(tmp_path / "store")
    console = make_console(store)
    store.set("s", "k", 1)
    time.sleep(1.2)  # a stats sample before the snapshot
    store.snapshot()
    wait_until(
        lambda: ("evstate_snapshot_age_seconds", ()) in scrape(console),
        what="the snapshot's age",
    )
    m = scrape(console)
    assert 0 <= m[("evstate_snapshot_age_seconds", ())] < 10
    assert m[("evstate_snapshot_revisions_behind", ())] == 0


def test_a_scrape_with_100_triggers_names_each(make_console: Callable[..., Console]) -> None:
    store = evstate.open()
    for i in range(100):
        store.trigger(f"t{i:03d}", lambda event: None)
    console = make_console(store)
    m = scrape(console)
    lags = [key for key in m if key[0] == "evstate_trigger_lag_events"]
    assert len(lags) == 100
