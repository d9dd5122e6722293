"""Several RedisStores on one Redis (the fleet, in one process): leases, fencing, handover."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from evstate import UpdateOp
from evstate.backends.redis.scripts import lease_key
from evstate.backends.redis.store import RedisStore
from evstate.backends.redis.writes import Fence
from evstate.core.writes import Write
from evstate.values import encode_value

Open = Callable[..., RedisStore]


def wait_until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_one_trigger_in_two_stores_delivers_each_event_once(open_store: Open) -> None:
    a, b = open_store(), open_store()
    seen: list[tuple[str, int]] = []
    a.trigger("t", lambda e: seen.append(("a", e.revision)))
    b.trigger("t", lambda e: seen.append(("b", e.revision)))
    for i in range(50):
        a.set("s", "k", i)
    a.wait_for_triggers(timeout=10)
    holder = (
        "a"
        if a.trigger_fleet_status()["t"]["holder"].endswith(a._cursors.consumer.split(":")[-1])
        else "b"
    )
    assert [r for _, r in seen] == list(range(1, 51))
    assert {who for who, _ in seen} == {holder}  # one holder delivers, in order
    (a if holder == "a" else b).unregister_trigger("t")  # hand over at once
    for i in range(50):
        b.set("s", "k", i)
    b.wait_for_triggers(timeout=10)
    assert [r for _, r in seen] == list(range(1, 101))  # no loss, no duplicate
    assert {who for who, _ in seen[50:]} == ({"a", "b"} - {holder})


def test_a_fenced_off_holder_cannot_commit(open_store: Open, redis_url: str) -> None:
    a = open_store()
    gate, started = threading.Event(), threading.Event()

    def slow(event: Any) -> None:
        started.set()
        gate.wait(10)

    a.trigger("t", slow)
    a.set("s", "k", 1)
    assert started.wait(10)  # a holds the lease and is delivering revision 1
    r = redis.Redis.from_url(redis_url)
    r.set(lease_key("t"), "someone-else", px=60_000)  # a's lease expired, another took it
    cursors = a._cursors
    writes = [Write("set", "out", "k", encode_value(1))]
    assert cursors._writer.commit_handler(writes, Fence("t", cursors.consumer, 1)) == "lease"
    gate.set()  # the handler returns; its cursor move is refused by the fence
    wait_until(lambda: not cursors._held["t"].holder)
    assert a.get("out", "k") is None
    assert a.trigger_status()["t"]["cursor"] == 0  # left for the next holder


def test_a_new_holder_delivers_what_a_dead_holder_did_not_finish(
    open_store: Open, redis_url: str
) -> None:
    a = open_store()
    a.trigger("t", lambda e: None).unregister()
    for i in range(5):
        a.set("s", "k", i)
    r = redis.Redis.from_url(redis_url)
    r.set(lease_key("t"), "a-process-that-died", px=300)  # it held the lease, then died
    b = open_store()
    seen: list[int] = []
    b.trigger("t", lambda e: seen.append(e.revision))
    b.wait_for_triggers(timeout=10)
    assert seen == [1, 2, 3, 4, 5]  # from the cursor, once the dead holder's lease expired


def test_delete_and_replay_from_another_store(open_store: Open) -> None:
    a, b = open_store(), open_store()
    seen: list[int] = []
    a.trigger("t", lambda e: seen.append(e.revision))
    for i in range(3):
        b.set("s", "k", i)
    a.wait_for_triggers(timeout=10)
    b.replay_trigger("t", 2)  # b has not registered it: the cursor is fleet-wide
    a.wait_for_triggers(timeout=10)
    assert seen == [1, 2, 3, 2, 3]
    b.delete_trigger("t")
    wait_until(lambda: not a.trigger_status().get("t", {}).get("registered", False))
    assert a.trigger_status()["t"]["last_error"] == "the trigger was deleted by another process"


def test_a_paused_store_hands_its_triggers_over(open_store: Open) -> None:
    a, b = open_store(), open_store(triggers_enabled=False)
    seen: list[tuple[str, int]] = []
    b.trigger("t", lambda e: seen.append(("b", e.revision)))
    a.trigger("t", lambda e: seen.append(("a", e.revision)))
    a.set("s", "k", 1)
    a.wait_for_triggers(timeout=10)
    a.triggers_enabled = False
    b.triggers_enabled = True
    a.set("s", "k", 2)
    b.wait_for_triggers(timeout=10)
    assert seen == [("a", 1), ("b", 2)]


def test_retention_is_pinned_by_a_trigger_registered_elsewhere(open_store: Open) -> None:
    a = open_store()
    b = open_store(retention={"revisions": 5})
    gate = threading.Event()
    a.trigger("lagging", lambda e: gate.wait(10), start="earliest")
    for i in range(40):
        b.set("s", "k", i)
    b.compact()
    assert b.stats()["oldest_revision"] == 1  # a still needs revision 2
    gate.set()
    a.wait_for_triggers(timeout=10)
    a.unregister_trigger("lagging")
    b.compact()
    assert b.stats()["horizon_revision"] == 35


def test_background_compaction_and_concurrent_compact(open_store: Open) -> None:
    a = open_store(retention={"revisions": 100}, save_interval_ms=100)
    b = open_store(retention={"revisions": 100})
    for i in range(1300):
        a.set("s", f"k{i % 50}", i)
    wait_until(lambda: a.stats()["horizon_revision"] > 0, timeout=10)  # by the background
    assert a.stats()["horizon_revision"] >= 1300 - 100 - 1000
    results: list[Any] = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.compact())) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert a.stats()["horizon_revision"] == 1200
    assert a.stats()["snapshots"] == 1
    assert a.at(1200).get("s", "k49") == 1199
    assert a.verify() == []


def test_concurrent_updates_from_two_stores_are_exact(open_store: Open) -> None:
    stores = [open_store(), open_store()]

    def work(store: RedisStore) -> None:
        for _ in range(400):
            store.update("c", "n", [UpdateOp.increment("v", 1), UpdateOp.append("log", 1)])

    threads = [threading.Thread(target=work, args=(s,)) for s in stores for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    value = stores[0].get("c", "n")
    assert value["v"] == 1600 and len(value["log"]) == 1600
    assert stores[1].revision == 1600


def test_fleet_status(open_store: Open) -> None:
    a = open_store()
    a.trigger("t", lambda e: None)
    a.set("s", "k", 1)
    a.wait_for_triggers(timeout=5)
    status = a.trigger_fleet_status()["t"]
    assert status["cursor"] == 1 and status["lag"] == 0 and status["parked"] == 0
    assert status["holder"] is not None
    assert 0 <= status["heartbeat_age_ms"] < 5000
    a.unregister_trigger("t")
    assert a.trigger_fleet_status()["t"]["heartbeat_age_ms"] is None
