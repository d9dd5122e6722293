"""Conformance: the state API behaves the same on the memory, file and redis stores."""

from __future__ import annotations

import copy
import itertools
import math
import threading
from collections.abc import Callable
from typing import Any

import pytest

import evstate
from evstate import UpdateOp
from evstate.ops import parse_ops
from evstate.ops_apply import apply_update_ops
from tests.unit.test_ops import MISSING, WORKED_EXAMPLES

USER = {"name": "Alice", "email": "alice@example.com"}


def test_set_returns_old_and_new(store: Any) -> None:
    assert store.set("users", "u1", USER) == {"old_value": None, "new_value": USER}
    assert store.set("users", "u1", {"name": "A2"}) == {
        "old_value": USER,
        "new_value": {"name": "A2"},
    }


def test_get_missing_is_none(store: Any) -> None:
    assert store.get("users", "nobody") is None
    assert store.get("nowhere", "nobody") is None


def test_stored_null_exists(store: Any) -> None:
    store.set("s", "k", None)
    assert store.get("s", "k") is None
    assert store.list("s") == {"k": None}
    assert store.set("s", "k", 1) == {"old_value": None, "new_value": 1}
    assert store.history("s", "k")[1].event_type == "updated"  # null existed: not created


def test_delete_returns_deleted_value(store: Any) -> None:
    store.set("users", "u1", USER)
    assert store.delete("users", "u1") == USER
    assert store.get("users", "u1") is None
    assert store.delete("users", "u1") is None


def test_delete_of_missing_key_still_records_an_event(store: Any) -> None:
    before = store.revision
    assert store.delete("s", "missing") is None
    assert store.revision == before + 1
    event = store.history("s", "missing")[-1]
    assert (event.event_type, event.old_value, event.new_value) == ("deleted", None, None)


def test_revisions_are_gap_free(store: Any) -> None:
    store.set("s", "a", 1)
    store.update("s", "a", [UpdateOp.increment("x", 1)])
    store.delete("s", "a")
    assert store.revision == 3
    assert [e.revision for e in store.events()] == [1, 2, 3]


def test_values_round_trip_exactly(store: Any) -> None:
    value = {
        "i64": -(2**63),
        "u64": 2**64 - 1,
        "float": 2.0,
        "small": 1e-300,
        "text": 'héllo \u2603 \U0001f600 "quoted" \\ \n',
        "list": [None, True, False, [], {}],
        "": "empty key",
    }
    assert store.set("s", "k", value)["new_value"] == value
    got = store.get("s", "k")
    assert got == value
    assert type(got["float"]) is float and type(got["u64"]) is int
    assert store.history("s", "k")[0].new_value == value


def test_update_applies_ops_and_creates_missing_key(store: Any) -> None:
    result = store.update(
        "users", "u1", [UpdateOp.set("status", "active"), UpdateOp.increment("loginCount", 1)]
    )
    assert result == {"old_value": None, "new_value": {"status": "active", "loginCount": 1}}
    result = store.update("users", "u1", [{"type": "increment", "path": "loginCount", "by": 2}])
    assert result["new_value"]["loginCount"] == 3
    assert "errors" not in result
    assert [e.event_type for e in store.history("users", "u1")] == ["created", "updated"]


def test_update_reports_failed_ops_and_keeps_the_rest(store: Any) -> None:
    store.set("s", "k", {"count": 2, "bad": "value"})
    result = store.update(
        "s",
        "k",
        [
            UpdateOp.increment("count", 3),
            UpdateOp.increment("bad", 3),
            UpdateOp.increment("missing", 3),
        ],
    )
    assert result["new_value"] == {"count": 5, "bad": "value", "missing": 3}
    assert [(e["op_index"], e["code"]) for e in result["errors"]] == [(1, "increment.not_number")]
    assert store.get("s", "k") == {"count": 5, "bad": "value", "missing": 3}


def test_update_with_malformed_ops_writes_nothing(store: Any) -> None:
    store.set("s", "k", {"n": 1})
    revision = store.revision
    with pytest.raises(evstate.InvalidRequestError) as info:
        store.update("s", "k", [{"type": "increment", "path": "n", "by": 1.5}])
    assert info.value.code == "deserialization_error"
    with pytest.raises(evstate.InvalidRequestError):
        store.update("s", "k", [{"type": "multiply", "path": "n"}])
    assert store.revision == revision
    assert store.get("s", "k") == {"n": 1}


@pytest.mark.parametrize(
    ("old", "ops", "new", "expected"),
    [row[1:] for row in WORKED_EXAMPLES],
    ids=[row[0] for row in WORKED_EXAMPLES],
)
def test_update_worked_examples(
    store: Any, old: Any, ops: list[Any], new: Any, expected: Any
) -> None:
    """The reference section 3.3 worked examples, through the store (stored, returned, logged)."""
    if old is not MISSING:
        store.set("s", "k", old)
    result = store.update("s", "k", ops)
    assert result["new_value"] == new
    assert [(e["op_index"], e["code"]) for e in result.get("errors", [])] == expected
    assert result["old_value"] == (None if old is MISSING else old)
    assert store.get("s", "k") == new
    event = store.history("s", "k")[-1]
    assert event.event_type == ("created" if old is MISSING else "updated")
    assert (event.old_value, event.new_value) == (result["old_value"], new)


# A combinatorial slice of the section 3.3 matrix: every op kind on every kind of target, with the
# path shapes that decide the rules (root, first level, nested, missing, bad segments).
STARTS: list[Any] = [
    MISSING,
    {},
    {"n": 2, "f": 1.5, "s": "x", "l": [1], "o": {"k": 1}, "z": None, "b": True},
    {"big": 2**63 - 1, "u": 2**64 - 1, "low": -(2**63)},
    None,
    True,
    7,
    1.5,
    "text",
    [1, 2],
]
PATHS_SINGLE = [
    "",
    "n",
    "f",
    "s",
    "l",
    "o",
    "z",
    "b",
    "big",
    "u",
    "low",
    "missing",
    "__proto__",
    "a" * 257,
]
PATHS_MULTI: list[Any] = [
    None,
    [],
    "o",
    ["o", "k"],
    ["x", "y"],
    ["l", "q"],
    ["", "a"],
    ["constructor"],
]
VALUES: list[Any] = ["v", 3, [1], {"m": 1}, None]


def _matrix() -> list[list[dict[str, Any]]]:
    cases: list[list[dict[str, Any]]] = []
    for path in PATHS_SINGLE:
        cases.append([{"type": "set", "path": path, "value": {"w": 1}}])
        cases.append([{"type": "remove", "path": path}])
        for by in (1, -1, 2**63 - 1):
            cases.append([{"type": "increment", "path": path, "by": by}])
            cases.append([{"type": "decrement", "path": path, "by": by}])
    for path, value in itertools.product(PATHS_MULTI, VALUES):
        op: dict[str, Any] = {"type": "append", "value": value}
        if path is not None:
            op["path"] = path
        cases.append([op])
        cases.append(
            [{**op, "type": "merge", "value": value if isinstance(value, dict) else {"v": value}}]
        )
    cases.append([{"type": "merge", "value": {"__proto__": 1}}])
    cases.append(
        [{"type": "increment", "path": "c", "by": 1}, {"type": "append", "path": "", "value": "x"}]
    )
    cases.append(
        [{"type": "append", "path": "", "value": "x"}, {"type": "increment", "path": "", "by": 1}]
    )
    return cases


MATRIX = _matrix()


def test_update_matrix_agrees_with_the_one_implementation(store: Any) -> None:
    """Every (start, ops) case: what the store returns, stores and logs equals apply_update_ops."""
    for number, (start, ops) in enumerate(itertools.product(STARTS, MATRIX)):
        key = f"k{number}"
        if start is not MISSING:
            store.set("m", key, start)
        before = store.revision
        if start is MISSING:
            expected, errors = apply_update_ops({}, parse_ops(ops), missing=True)
        else:
            expected, errors = apply_update_ops(copy.deepcopy(start), parse_ops(ops), missing=False)
        result = store.update("m", key, ops)
        context = f"start={start!r} ops={ops!r}"
        assert result["new_value"] == expected, context
        assert result.get("errors", []) == errors, context
        assert ("errors" in result) == bool(errors), context
        assert store.get("m", key) == expected, context
        assert store.revision == before + 1, context
    assert len(store.list("m")) == len(STARTS) * len(MATRIX)


def test_list_is_sorted_mapping(store: Any) -> None:
    for key in ["b", "a", "c"]:
        store.set("s", key, key.upper())
    assert list(store.list("s").items()) == [("a", "A"), ("b", "B"), ("c", "C")]
    assert store.list("empty") == {}


def test_list_values_keep_insertion_order(store: Any) -> None:
    """Insertion order holds in Redis while a hash is small (listpack); see docs/scaling.md."""
    for key in ["b", "a", "c"]:
        store.set("s", key, key)
    store.set("s", "b", "B")  # an overwrite keeps its place
    assert store.list_values("s") == ["B", "a", "c"]


def test_list_groups_sorted_and_only_non_empty(store: Any) -> None:
    store.set("users", "u", 1)
    store.set("config", "c", 1)
    store.set("cache", "x", 1)
    store.delete("cache", "x")
    assert store.list_groups() == {"groups": ["config", "users"]}


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (b"bytes", "$"),
        ({"a": {1, 2}}, "$.a"),
        ({"t": (1, 2)}, "$.t"),
        ({1: "x"}, "$"),
        ([1, math.nan], "$[1]"),
        ({"f": math.inf}, "$.f"),
        ({"o": object()}, "$.o"),
        (2**64, "$"),
    ],
)
def test_bad_values_rejected_with_nothing_written(store: Any, value: object, path: str) -> None:
    store.set("s", "k", "before")
    revision = store.revision
    with pytest.raises(evstate.InvalidValueError) as info:
        store.set("s", "k", value)
    assert info.value.path.startswith(path)
    assert store.get("s", "k") == "before"
    assert store.revision == revision


@pytest.mark.parametrize(("scope", "key"), [(1, "k"), ("s", None), (b"s", "k"), ("s", ("k",))])
def test_scope_and_key_must_be_str(store: Any, scope: object, key: object) -> None:
    for call in (
        lambda: store.set(scope, key, 1),
        lambda: store.get(scope, key),
        lambda: store.delete(scope, key),
        lambda: store.update(scope, key, []),
        lambda: store.history(scope, key),
    ):
        with pytest.raises(evstate.InvalidRequestError):
            call()
    assert store.revision == 0


def test_empty_scope_and_key_are_allowed(store: Any) -> None:
    store.set("", "", {"x": 1})
    assert store.get("", "") == {"x": 1}
    assert store.list_groups() == {"groups": [""]}


def test_odd_names(store: Any) -> None:
    names = ["a:b", "state:x", "*", "[x]", "é", "with space", "\x00nul"]
    for name in names:
        store.set(name, name, name)
    for name in names:
        assert store.get(name, name) == name
    assert store.list_groups() == {"groups": sorted(names)}


def test_values_are_isolated(store: Any) -> None:
    value = {"tags": ["a"], "nested": {"n": 1}}
    result = store.set("s", "k", value)
    value["tags"].append("mutated")
    result["new_value"]["nested"]["n"] = 99
    got = store.get("s", "k")
    got["tags"].append("again")
    store.list("s")["k"]["nested"]["n"] = 7
    assert store.get("s", "k") == {"tags": ["a"], "nested": {"n": 1}}
    raw_ops = [UpdateOp.set("obj", {"deep": [1]}).to_dict()]
    store.update("s", "k", raw_ops)
    raw_ops[0]["value"]["deep"].append(2)
    assert store.get("s", "k")["obj"] == {"deep": [1]}


def test_max_value_bytes(make_store: Callable[..., Any]) -> None:
    store = make_store(max_value_bytes=20)
    store.set("s", "small", "x" * 10)
    with pytest.raises(evstate.ValueTooLargeError) as info:
        store.set("s", "big", "x" * 30)
    assert info.value.code == "VALUE_TOO_LARGE"
    assert str(info.value) == "value of 32 bytes exceeds the configured max_value_bytes limit of 20"
    assert store.get("s", "big") is None
    assert store.revision == 1


def test_closed_store_refuses_calls(store: Any) -> None:
    store.set("s", "k", 1)
    store.close()
    store.close()  # idempotent
    assert store.closed
    with pytest.raises(evstate.StoreClosedError):
        store.get("s", "k")
    with pytest.raises(evstate.StoreClosedError):
        store.set("s", "k", 2)
    assert store.revision == 1


def test_context_manager_closes(make_store: Callable[..., Any]) -> None:
    with make_store() as store:
        store.set("s", "k", 1)
    assert store.closed


def test_threads_increment_exactly(store: Any) -> None:
    def work() -> None:
        for _ in range(300):
            store.update("counters", "c", [UpdateOp.increment("n", 1)])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("counters", "c") == {"n": 2400}
    assert store.revision == 2400


def test_reads_during_writes_never_fail(make_store: Callable[..., Any]) -> None:
    store = make_store(fsync="never")  # the file store's fsyncs only make this slow
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                store.list("s")
                store.list_groups()
                store.get("s", "k1")
        except BaseException as exc:  # pragma: no cover - the assertion reports it
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(300):
        store.set("s", f"k{i % 50}", i)
        if i % 7 == 0:
            store.delete("s", f"k{i % 50}")
        store.set(f"scope{i % 20}", "k", i)
        store.delete(f"scope{i % 20}", "k")
    stop.set()
    t.join()
    assert errors == []


def test_call_functions(store: Any) -> None:
    assert store.call("state::set", {"scope": "s", "key": "k", "data": {"a": 1}}) == {
        "old_value": None,
        "new_value": {"a": 1},
    }
    assert store.call("state.get", {"scope": "s", "key": "k"}) == {"a": 1}
    ops = [{"type": "increment", "path": "a", "by": 2}]
    assert store.call("state::update", {"scope": "s", "key": "k", "ops": ops})["new_value"] == {
        "a": 3
    }
    assert store.call("state::list", {"scope": "s"}) == [{"a": 3}]
    assert store.call("state.list", {"scope": "s"}) == {"k": {"a": 3}}
    assert store.call("state::list_groups") == {"groups": ["s"]}
    assert store.call("state::delete", {"scope": "s", "key": "k"}) == {"a": 3}
    with pytest.raises(evstate.FunctionNotFoundError):
        store.call("state::nope", {})
    with pytest.raises(evstate.InvalidRequestError) as info:
        store.call("state::set", {"scope": "s"})
    assert info.value.code == "deserialization_error"
