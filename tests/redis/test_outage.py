"""Redis restarted mid-run: the outage is reported, the store reconnects, nothing acked is lost."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from evstate import UpdateOp
from evstate.backends.redis.client import BackendUnavailableError
from evstate.backends.redis.store import open_redis
from tests.redis.server import RedisServer


def test_redis_crash_and_restart_loses_no_acknowledged_write(own_server: RedisServer) -> None:
    store = open_redis(own_server.url, lease_ms=1000)
    try:
        store.trigger(
            "count",
            lambda e: e.store.update("out", "n", [UpdateOp.increment("v", 1)]),
            scope="in",
        )
        acked: dict[str, int] = {}
        outages: list[BaseException] = []
        restarted = threading.Event()

        def crash_and_restart() -> None:
            while len(acked) < 200:
                time.sleep(0.01)
            own_server.restart(kill=True, down=1.0)  # SIGKILL: only the fsynced AOF survives
            restarted.set()

        crasher = threading.Thread(target=crash_and_restart)
        crasher.start()
        attempted = 0
        after = 0
        deadline = time.monotonic() + 60
        while (not restarted.is_set() or after < 200) and time.monotonic() < deadline:
            key = f"k{attempted}"
            attempted += 1
            try:
                store.set("in", key, attempted)
            except BackendUnavailableError as exc:
                outages.append(exc)
                time.sleep(0.02)
                continue
            acked[key] = attempted
            after += restarted.is_set()
        crasher.join()
        assert restarted.is_set() and after >= 200, "the store did not recover in time"
        assert outages, "the outage was never reported"
        assert "unavailable" in str(outages[0])

        data = store.list("in")
        lost = [k for k, v in acked.items() if data.get(k) != v]
        assert lost == []  # every acknowledged write survived the crash
        assert set(data) <= {f"k{i}" for i in range(attempted)}  # unacked ones may exist
        assert store.verify() == []
        revisions = [e.revision for e in store.events()]  # the trigger may still be writing
        assert revisions == list(range(1, len(revisions) + 1))

        in_events = len(list(store.events(scope="in")))
        store.wait_for_triggers(timeout=30)
        assert store.get("out", "n") == {"v": in_events}  # trigger writes: exactly once
    finally:
        store.close()


def test_reads_report_the_outage_and_recover(own_server: RedisServer) -> None:
    with open_redis(own_server.url) as store:
        store.set("s", "k", 1)
        own_server.stop(kill=True)
        calls: list[Any] = [
            lambda: store.get("s", "k"),
            lambda: store.list("s"),
            lambda: store.list_groups(),
            lambda: store.revision,
            lambda: store.history("s", "k"),
            lambda: store.set("s", "k", 2),
            lambda: store.update("s", "k", [UpdateOp.increment("n", 1)]),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                call()
            assert time.monotonic() - started < 5  # reported promptly, not hung
        with pytest.raises(BackendUnavailableError) as info:
            store.call("state::set", {"scope": "s", "key": "k", "value": 3})
        assert info.value.code == "SET_ERROR"  # the engine's code on the function surface
        own_server.start()
        assert store.get("s", "k") == 1  # reconnected by itself
        store.set("s", "k", 4)
        assert store.revision == 2
