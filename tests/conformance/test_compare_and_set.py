"""``compare_and_set`` and ``list_keys`` on every store kind, embedded and through ``call()``.

The rules (docs/api.md, "Compare-and-set"): ``expected`` ``None`` (or left out on the
wire) means "only if absent"; equality is JSON equality; a swap is an ordinary
``created``/``updated`` event; a miss writes nothing and answers the current value. Races:
N threads (separate store handles on redis, like separate processes) on one key, one
winner per round.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evstate
from tests.conformance.conftest import STORE_KINDS

json_leaves = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=5)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


def test_absent_expected_creates_only_once(store: Any) -> None:
    assert store.compare_and_set("locks", "job-1", None, {"owner": "a"}) == {"swapped": True}
    assert store.compare_and_set("locks", "job-1", None, {"owner": "b"}) == {
        "swapped": False,
        "current": {"owner": "a"},
    }
    assert store.get("locks", "job-1") == {"owner": "a"}


def test_swap_on_equal_value_is_an_ordinary_event(store: Any) -> None:
    store.set("c", "n", {"v": 1, "tags": ["x"]})
    before = store.revision
    # key order differs, 1 == 1.0: equal as JSON data
    assert store.compare_and_set("c", "n", {"tags": ["x"], "v": 1.0}, {"v": 2}) == {"swapped": True}
    assert store.revision == before + 1
    [event] = store.history("c", "n", since=before + 1)
    assert (event.event_type, event.old_value, event.new_value) == (
        "updated",
        {"v": 1, "tags": ["x"]},
        {"v": 2},
    )


def test_miss_writes_nothing_and_reports_current(store: Any) -> None:
    store.set("c", "n", 5)
    before = store.revision
    assert store.compare_and_set("c", "n", 4, 6) == {"swapped": False, "current": 5}
    assert store.compare_and_set("c", "missing", 4, 6) == {"swapped": False, "current": None}
    assert store.revision == before
    assert store.get("c", "missing") is None


def test_true_is_not_one_and_null_value_is_present(store: Any) -> None:
    store.set("c", "flag", True)
    assert store.compare_and_set("c", "flag", 1, False)["swapped"] is False
    assert store.compare_and_set("c", "flag", True, None) == {"swapped": True}
    assert store.get("c", "flag") is None
    # the key exists (holding null), so "only if absent" does not swap
    assert store.list_keys("c") == ["flag"]
    assert store.compare_and_set("c", "flag", None, 1) == {"swapped": False, "current": None}


def test_swap_event_reaches_at(store: Any) -> None:
    store.compare_and_set("c", "k", None, "first")
    revision = store.revision
    store.compare_and_set("c", "k", "first", "second")
    assert store.at(revision).get("c", "k") == "first"
    assert store.at(revision + 1).get("c", "k") == "second"


def test_bad_arguments_write_nothing(store: Any) -> None:
    before = store.revision
    with pytest.raises(evstate.InvalidRequestError):
        store.compare_and_set("c", 5, None, 1)
    with pytest.raises(evstate.InvalidValueError):
        store.compare_and_set("c", "k", None, {1, 2})
    with pytest.raises(evstate.InvalidValueError):
        store.compare_and_set("c", "k", float("nan"), 1)
    assert store.revision == before


def test_value_limit_applies(make_store: Callable[..., Any]) -> None:
    store = make_store(max_value_bytes=10)
    with pytest.raises(evstate.ValueTooLargeError):
        store.compare_and_set("c", "k", None, "x" * 50)
    assert store.get("c", "k") is None


def test_call_shapes(store: Any) -> None:
    cas = "state::compare-and-set"
    assert store.call(cas, {"scope": "s", "key": "k", "value": 1}) == {"swapped": True}
    assert store.call(cas, {"scope": "s", "key": "k", "expected": None, "value": 2}) == {
        "swapped": False,
        "current": 1,
    }
    assert store.call(cas, {"scope": "s", "key": "k", "expected": 1, "value": 2}) == {
        "swapped": True
    }
    with pytest.raises(evstate.InvalidRequestError) as info:
        store.call(cas, {"scope": "s", "key": "k"})
    assert info.value.code == "deserialization_error"
    assert "missing field `value`" in info.value.message
    assert store.call("state::list_keys", {"scope": "s"}) == {"keys": ["k"]}
    assert store.call("state::list_keys", {"scope": "none"}) == {"keys": []}


def test_list_keys_sorted(store: Any) -> None:
    for key in ["b", "a", "é", "A", "a b", "10", "9"]:
        store.set("s", key, 1)
    store.delete("s", "9")
    assert store.list_keys("s") == sorted(["b", "a", "é", "A", "a b", "10"])
    with pytest.raises(evstate.InvalidRequestError):
        store.list_keys(None)


@given(stored=json_values, expected=json_values)
@settings(max_examples=60, deadline=None)
def test_equality_is_json_equality(stored: Any, expected: Any) -> None:
    from evstate.values import json_equal

    with evstate.open() as store:
        store.set("h", "k", stored)
        result = store.compare_and_set("h", "k", expected, "new")
        assert result["swapped"] == (expected is not None and json_equal(stored, expected))
        if not result["swapped"]:
            assert result["current"] == stored


@pytest.mark.parametrize("store_kind", STORE_KINDS)
def test_racing_threads_one_winner_per_round(
    make_store: Callable[..., Any], store_kind: str
) -> None:
    """Eight contenders per round on one key; exactly one swaps each round."""
    first = make_store()
    handles = [first] + ([make_store() for _ in range(3)] if store_kind == "redis" else [])
    contenders, rounds = 8, 25
    first.set("race", "token", {"round": 0})
    barrier = threading.Barrier(contenders)
    wins: list[list[int]] = [[] for _ in range(contenders)]
    errors: list[BaseException] = []

    def contend(me: int) -> None:
        handle = handles[me % len(handles)]
        try:
            for r in range(rounds):
                barrier.wait(timeout=30)
                result = handle.compare_and_set("race", "token", {"round": r}, {"round": r + 1})
                if result["swapped"]:
                    wins[me].append(r)
                else:
                    assert result["current"]["round"] == r + 1
                barrier.wait(timeout=30)
        except BaseException as exc:  # reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    won = sorted(r for per in wins for r in per)
    assert won == list(range(rounds))  # one winner per round, every round
    events = first.history("race", "token")
    assert [e.new_value["round"] for e in events] == list(range(rounds + 1))
