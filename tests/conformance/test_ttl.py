"""Time-to-live on every store kind (docs/api.md, "Time-to-live").

Memory and file stores run on an injected clock (no sleeping); redis (Redis's clock) and
the follower (the owner writes, a follower reads with the wall clock) use short real TTLs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import evstate
from evstate.config import Config
from tests.conformance.conftest import STORE_KINDS, OwnerAndFollower

START_MS = 1_900_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = START_MS

    def __call__(self) -> int:
        return self.now


class Env:
    """A store of one kind, and a way to let time pass for it."""

    def __init__(self, kind: str, open_store: Callable[[], Any], clock: FakeClock | None):
        self.kind = kind
        self._open = open_store
        self.clock = clock
        self.store = open_store()

    def advance(self, ms: int) -> None:
        if self.clock is not None:
            self.clock.now += ms
        else:
            time.sleep(ms / 1000)

    def settle(self) -> None:
        """Make the log current: the owner writes every due expiry event."""
        owner = self.store._owner if isinstance(self.store, OwnerAndFollower) else self.store
        owner.expire()

    def reopen(self) -> None:
        self.store.close()
        self.store = self._open()


TTL = 200  # ms; real-time kinds sleep just past it


@pytest.fixture
def env(
    store_kind: str, tmp_path: os.PathLike[str], request: pytest.FixtureRequest
) -> Iterator[Env]:
    clock: FakeClock | None = None
    if store_kind in ("memory", "file"):
        clock = FakeClock()
        if store_kind == "memory":
            config = Config(store_method="in_memory")
        else:
            config = Config(file_path=os.path.join(tmp_path, "store"))
        opened = Env(store_kind, lambda: evstate.Store(config, clock=clock), clock)
    else:
        make_store = request.getfixturevalue("make_store")
        opened = Env(store_kind, make_store, None)
    yield opened
    opened.store.close()


def test_ttl_reports_remaining_time(env: Env) -> None:
    store = env.store
    store.set("s", "k", {"v": 1}, ttl_ms=60_000)
    store.set("s", "plain", 1)
    remaining = store.ttl("s", "k")
    assert remaining is not None and 59_000 < remaining <= 60_000
    assert store.ttl("s", "plain") is None
    assert store.ttl("s", "missing") is None


def test_set_without_ttl_clears_it_update_keeps_it(env: Env) -> None:
    store = env.store
    store.set("s", "k", {"n": 1}, ttl_ms=60_000)
    store.update("s", "k", [{"type": "increment", "path": "n", "by": 1}])
    kept = store.ttl("s", "k")
    assert kept is not None and kept > 50_000
    assert store.get("s", "k") == {"n": 2}
    store.set("s", "k", {"n": 3})
    assert store.ttl("s", "k") is None


def test_compare_and_set_and_batch_take_ttl(env: Env) -> None:
    store = env.store
    assert store.compare_and_set("s", "lock", None, "me", ttl_ms=60_000) == {"swapped": True}
    assert (store.ttl("s", "lock") or 0) > 50_000
    with store.batch() as batch:
        batch.set("s", "a", 1, ttl_ms=60_000)
        batch.compare_and_set("s", "b", None, 2, ttl_ms=60_000)
        batch.set("s", "c", 3)
    assert (store.ttl("s", "a") or 0) > 50_000 and (store.ttl("s", "b") or 0) > 50_000
    assert store.ttl("s", "c") is None


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "100", [1], 10**20])
def test_bad_ttl_is_refused_and_writes_nothing(env: Env, bad: Any) -> None:
    store = env.store
    before = store.revision
    with pytest.raises(evstate.InvalidRequestError):
        store.set("s", "k", 1, ttl_ms=bad)
    with pytest.raises(evstate.InvalidRequestError):
        store.compare_and_set("s", "k", None, 1, ttl_ms=bad)
    with pytest.raises(evstate.InvalidRequestError), store.batch() as batch:
        batch.set("s", "other", 1)
        batch.set("s", "k", 1, ttl_ms=bad)
    with pytest.raises(evstate.InvalidRequestError):
        store.call("state::set", {"scope": "s", "key": "k", "value": 1, "ttl_ms": bad})
    assert store.revision == before and store.get("s", "k") is None


def test_an_expired_key_is_gone_for_every_read_at_once(env: Env) -> None:
    store = env.store
    store.set("s", "brief", {"v": 1}, ttl_ms=TTL)
    store.set("s", "stays", 2)
    store.set("alone", "brief", 3, ttl_ms=TTL)
    assert store.list_groups()["groups"] == ["alone", "s"]
    env.advance(TTL + 50)
    # no expiry event needs to have been written for these
    assert store.get("s", "brief") is None
    assert store.list("s") == {"stays": 2}
    assert store.list_values("s") == [2]
    assert store.list_keys("s") == ["stays"]
    assert [k for k, _ in store.list_entries("s")["entries"]] == ["stays"]
    assert store.list_groups()["groups"] == ["s"]
    assert store.at().list("s") == {"stays": 2}
    assert store.ttl("s", "brief") is None
    assert store.call("state::get", {"scope": "s", "key": "brief"}) is None


def test_expiry_is_a_deleted_event_with_the_old_value(env: Env) -> None:
    store = env.store
    store.set("s", "k", {"v": 1}, ttl_ms=TTL)
    written = store.revision
    env.advance(TTL + 50)
    env.settle()
    events = store.history("s", "k")
    assert [(e.event_type, e.reason) for e in events] == [("created", None), ("deleted", "expired")]
    expiry = events[-1]
    assert expiry.old_value == {"v": 1} and expiry.new_value is None
    assert expiry.to_dict()["reason"] == "expired" and "reason" not in events[0].to_dict()
    assert expiry.revision == written + 1
    assert store.at(written).list("s") == {"k": {"v": 1}}  # as of its own event's time
    assert store.at(expiry.revision).list("s") == {}
    assert store.list_groups()["groups"] == []


def test_writing_an_expired_key_records_its_expiry_first(env: Env) -> None:
    store = env.store
    store.set("s", "k", "old", ttl_ms=TTL)
    env.advance(TTL + 50)
    result = store.set("s", "k", "new")
    assert result == {"old_value": None, "new_value": "new"}
    kinds = [(e.event_type, e.reason) for e in store.history("s", "k")]
    assert kinds == [("created", None), ("deleted", "expired"), ("created", None)]
    assert store.compare_and_set("s", "k", "new", "newer", ttl_ms=TTL)["swapped"]
    env.advance(TTL + 50)
    assert store.compare_and_set("s", "k", None, "fresh")["swapped"]  # absent again
    assert store.get("s", "k") == "fresh"


@pytest.mark.parametrize("store_kind", ["file", "redis", "follower"])  # memory keeps nothing
def test_deadlines_survive_reopen_and_expire_at_open(env: Env) -> None:
    store = env.store
    store.set("s", "later", 1, ttl_ms=600_000)
    store.set("s", "soon", 2, ttl_ms=TTL)
    store.snapshot()
    store.set("s", "after-snapshot", 3, ttl_ms=TTL)
    env.reopen()
    env.advance(TTL + 50)
    env.reopen()  # the deadlines passed while it was closed: expired at open
    store = env.store
    if env.kind == "follower":
        env.settle()
    reasons = [(e.key, e.reason) for e in store.events() if e.event_type == "deleted"]
    assert sorted(reasons) == [("after-snapshot", "expired"), ("soon", "expired")]
    assert store.list("s") == {"later": 1}
    assert (store.ttl("s", "later") or 0) > 500_000


@pytest.mark.parametrize("store_kind", STORE_KINDS)
def test_triggers_receive_expiry_events(env: Env) -> None:
    store = env.store
    seen: list[tuple[str, str, Any, str | None]] = []
    store.trigger("watch", lambda e: seen.append((e.event_type, e.key, e.old_value, e.reason)))
    store.set("s", "k", {"v": 1}, ttl_ms=TTL)
    env.advance(TTL + 50)
    env.settle()
    store.wait_for_triggers(timeout=10)
    assert seen == [("created", "k", None, None), ("deleted", "k", {"v": 1}, "expired")]


def test_call_and_wire_forms(env: Env) -> None:
    store = env.store
    assert store.call("state::set", {"scope": "s", "key": "k", "value": 1, "ttl_ms": 60_000})
    remaining = store.call("evstate::ttl", {"scope": "s", "key": "k"})["ttl_ms"]
    assert 50_000 < remaining <= 60_000
    store.call("state::set", {"scope": "s", "key": "k", "value": 2, "ttl_ms": None})
    assert store.call("evstate::ttl", {"scope": "s", "key": "k"}) == {"ttl_ms": None}
    store.call(
        "evstate::batch",
        {"ops": [{"op": "set", "scope": "s", "key": "b", "value": 1, "ttl_ms": 60_000}]},
    )
    assert (store.ttl("s", "b") or 0) > 50_000
