"""Atomic multi-key batches on every store kind (docs/api.md, "Batches").

All or nothing; one event per change, in order; no reader sees half a batch (``get``,
``list``, ``list_groups``, ``at()``, a follower, triggers); a failed compare-and-set, a bad
value or an exception in the block discards it all.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import evstate
from tests.conformance.conftest import STORE_KINDS


def test_commits_every_change_as_its_own_event(store: Any) -> None:
    store.set("a", "x", 1)
    start = store.revision
    with store.batch() as batch:
        batch.set("a", "y", {"n": 1})
        batch.update("a", "y", [{"type": "increment", "path": "n", "by": 2}])
        batch.delete("a", "x")
        batch.compare_and_set("b", "lock", None, "mine")
        batch.set("c", "z", [1, 2])
    assert batch.revision == start + 5 == store.revision
    assert [(e.revision, e.event_type, e.scope, e.key) for e in batch.events] == [
        (start + 1, "created", "a", "y"),
        (start + 2, "updated", "a", "y"),
        (start + 3, "deleted", "a", "x"),
        (start + 4, "created", "b", "lock"),
        (start + 5, "created", "c", "z"),
    ]
    assert store.list("a") == {"y": {"n": 3}}
    assert store.get("b", "lock") == "mine"
    assert [e.new_value for e in store.history("a", "y")] == [{"n": 1}, {"n": 3}]
    logged = list(store.events(start + 1))
    assert [(e.scope, e.key, e.old_value, e.new_value) for e in logged] == [
        (e.scope, e.key, e.old_value, e.new_value) for e in batch.events
    ]
    assert len({e.timestamp for e in logged}) == 1


def test_at_never_shows_half_a_batch(store: Any) -> None:
    store.set("a", "x", 0)
    before = store.revision
    with store.batch() as batch:
        batch.set("a", "x", 1)
        batch.set("a", "y", 1)
        batch.set("a", "z", 1)
    for revision in (before + 1, before + 2):
        view = store.at(revision)
        assert view.revision == before
        assert view.list("a") == {"x": 0}
    assert store.at(before + 3).list("a") == {"x": 1, "y": 1, "z": 1}


def test_exception_in_block_writes_nothing(store: Any) -> None:
    store.set("a", "x", 1)
    before = store.revision
    with pytest.raises(RuntimeError), store.batch() as batch:
        batch.set("a", "x", 2)
        batch.delete("a", "x")
        raise RuntimeError("changed my mind")
    assert store.revision == before and store.get("a", "x") == 1
    with pytest.raises(evstate.InvalidRequestError):
        batch.set("a", "x", 3)  # a discarded batch takes nothing more


def test_bad_value_or_op_aborts_everything(store: Any) -> None:
    before = store.revision
    with pytest.raises(evstate.InvalidValueError), store.batch() as batch:
        batch.set("a", "ok", 1)
        batch.set("a", "bad", {"nan": float("nan")})
    with pytest.raises(evstate.InvalidRequestError), store.batch() as batch:
        batch.set("a", "ok", 1)
        batch.update("a", "ok", [{"type": "frobnicate"}])
    with pytest.raises(evstate.InvalidRequestError), store.batch() as batch:
        batch.set("a", 7, 1)
    assert store.revision == before and store.list("a") == {}


def test_failed_compare_and_set_aborts_everything(store: Any) -> None:
    store.set("acct", "a", {"units": 10})
    before = store.revision
    with pytest.raises(evstate.CompareFailedError) as info, store.batch() as batch:
        batch.set("acct", "b", {"units": 5})
        batch.compare_and_set("acct", "a", {"units": 9}, {"units": 4})
    assert info.value.code == "CAS_FAILED"
    assert (info.value.index, info.value.scope, info.value.key) == (1, "acct", "a")
    assert info.value.current == {"units": 10}
    assert store.revision == before and store.get("acct", "b") is None


def test_changes_see_earlier_changes_of_the_batch(store: Any) -> None:
    with store.batch() as batch:
        batch.set("a", "k", {"v": 1})
        batch.compare_and_set("a", "k", {"v": 1}, {"v": 2})
        batch.compare_and_set("a", "new", None, "created")
        batch.compare_and_set("a", "new", "created", "again")
    assert store.list("a") == {"k": {"v": 2}, "new": "again"}


def test_empty_batch_writes_nothing(store: Any) -> None:
    before = store.revision
    with store.batch() as batch:
        pass
    assert batch.revision is None and batch.events == [] and store.revision == before


def test_value_limit_checked_when_added(make_store: Any) -> None:
    store = make_store(max_value_bytes=8)
    with pytest.raises(evstate.ValueTooLargeError), store.batch() as batch:
        batch.set("a", "k", "x" * 20)
    assert store.get("a", "k") is None


def test_call_batch(store: Any) -> None:
    result = store.call(
        "evstate::batch",
        {
            "ops": [
                {"op": "set", "scope": "s", "key": "a", "value": 1},
                {
                    "op": "update",
                    "scope": "s",
                    "key": "a",
                    "ops": [{"type": "increment", "path": "", "by": 1}],
                },
                {"op": "compare-and-set", "scope": "s", "key": "b", "value": "x"},
                {"op": "delete", "scope": "s", "key": "a"},
            ]
        },
    )
    assert result["revision"] == store.revision
    assert [r["event_type"] for r in result["results"]] == [
        "created",
        "updated",
        "created",
        "deleted",
    ]
    with pytest.raises(evstate.Error) as info:
        store.call(
            "evstate::batch",
            {
                "ops": [
                    {"op": "set", "scope": "s", "key": "c", "value": 1},
                    {
                        "op": "compare-and-set",
                        "scope": "s",
                        "key": "b",
                        "expected": "y",
                        "value": 2,
                    },
                ]
            },
        )
    assert info.value.code == "CAS_FAILED" and store.get("s", "c") is None
    for payload in ({"ops": 5}, {"ops": [{"op": "nope", "scope": "s", "key": "k"}]}, {}):
        with pytest.raises(evstate.InvalidRequestError) as bad:
            store.call("evstate::batch", payload)
        assert bad.value.code == "deserialization_error"


def test_readers_never_see_half_a_batch(store: Any) -> None:
    """A batch moves a token between scopes; concurrent readers always see exactly one."""
    store.set("left", "token", 1)
    store.set("one", "p", 0)
    stop = threading.Event()
    failures: list[BaseException] = []

    def move() -> None:
        try:
            for n in range(300):
                src, dst = ("left", "right") if n % 2 == 0 else ("right", "left")
                old, new = ("p", "q") if n % 2 == 0 else ("q", "p")
                with store.batch() as batch:
                    batch.delete(src, "token")
                    batch.set(dst, "token", n)
                    batch.delete("one", old)
                    batch.set("one", new, n)
        except BaseException as exc:
            failures.append(exc)
        finally:
            stop.set()

    writer = threading.Thread(target=move)
    writer.start()
    seen = 0
    try:
        while not stop.is_set() or seen < 5:
            groups = store.list_groups()["groups"]
            assert sorted(set(groups) & {"left", "right"}) in (["left"], ["right"]), groups
            assert len(store.list("one")) == 1
            assert len(store.list_keys("one")) == 1
            assert len(store.list_values("one")) == 1
            seen += 1
            if seen > 50_000:
                break
    finally:
        writer.join(timeout=60)
    assert not failures, failures
    assert store.list_groups()["groups"] == ["left", "one"]


@pytest.mark.parametrize("store_kind", STORE_KINDS)
def test_triggers_get_each_change_in_order(store: Any, store_kind: str) -> None:
    seen: list[tuple[int, str, str, Any, Any]] = []
    store.trigger(
        "watch",
        lambda e: seen.append((e.revision, e.event_type, e.key, e.old_value, e.new_value)),
        scope="t",
    )
    store.set("t", "a", 1)
    with store.batch() as batch:
        batch.update("t", "a", [{"type": "increment", "path": "", "by": 1}])
        batch.set("t", "b", 2)
        batch.set("other", "x", 0)
        batch.delete("t", "a")
    store.wait_for_triggers(timeout=10)
    first = seen[0][0]
    assert seen == [
        (first, "created", "a", None, 1),
        (first + 1, "updated", "a", 1, 2),
        (first + 2, "created", "b", None, 2),
        (first + 4, "deleted", "a", 2, None),
    ]
