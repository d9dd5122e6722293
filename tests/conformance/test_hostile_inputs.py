"""Conformance: hostile inputs get a typed error, write nothing, and poison nothing.

Found by the second adversarial review (docs/reliability.md, "Regressions"); each test is
named after the defect and runs against every store kind.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

import evstate
from tests.conformance.conftest import STORE_KINDS

LONE = "x\ud800"
UNDECODABLE = os.fsdecode(b"x\xff")  # bytes that are not UTF-8, as Python reads them


@pytest.mark.parametrize("bad", [LONE, UNDECODABLE])
def test_a_name_that_is_not_valid_unicode_is_refused_and_writes_nothing(
    store: Any, bad: str
) -> None:
    """Bug: a lone-surrogate key raised UnicodeEncodeError (the memory store accepted it)."""
    store.set("s", "k", 1)
    calls = [
        lambda: store.set(bad, "k", 1),
        lambda: store.set("s", bad, 1),
        lambda: store.update("s", bad, [evstate.UpdateOp.increment("n", 1)]),
        lambda: store.delete(bad, "k"),
        lambda: store.get("s", bad),
        lambda: store.list(bad),
        lambda: store.history("s", bad),
        lambda: store.call("state::set", {"scope": bad, "key": "k", "value": 1}),
    ]
    for call in calls:
        with pytest.raises(evstate.InvalidRequestError, match="not valid Unicode"):
            call()
    assert store.revision == 1
    assert store.list_groups() == {"groups": ["s"]}
    assert store.verify() == []


def test_a_trigger_name_that_is_not_valid_unicode_poisons_nothing(make_store: Any) -> None:
    """Bug: a trigger named "x\\ud800" made every later cursor checkpoint and snapshot
    fail; after a restart other triggers silently missed the events written meanwhile."""
    store = make_store()
    seen: list[int] = []
    with pytest.raises(evstate.InvalidRequestError, match="valid Unicode"):
        store.trigger(LONE, seen.append)
    store.trigger("good", lambda e: seen.append(e.revision))
    store.set("s", "k", 1)
    store.wait_for_triggers(timeout=10)
    store.snapshot()
    assert seen == [1]
    assert LONE not in store.trigger_status()


@pytest.mark.parametrize("store_kind", STORE_KINDS)  # a follower's handlers never write
def test_handler_writes_obey_max_value_bytes(make_store: Any) -> None:
    """Bug: ``event.store.set`` bypassed ``max_value_bytes``: a handler could store what
    a direct write may not."""
    store = make_store(max_value_bytes=64)
    store._triggers.delivery.backoff = 0.001
    errors: list[str] = []

    def handler(event: Any) -> None:
        try:
            event.store.set("out", "big", "x" * 100)
        except evstate.ValueTooLargeError as exc:
            errors.append(exc.code)
            raise

    store.trigger("t", handler, scope="in")
    store.set("in", "k", 1)
    store.wait_for_triggers(timeout=10)
    assert errors and set(errors) == {"VALUE_TOO_LARGE"}
    assert store.get("out", "big") is None
    assert [p["revision"] for p in store.parked_events("t")] == [1]
