"""The real Python iii SDK (iii-sdk 0.25.0) calling the state functions through the server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from iii import InvocationError

from evstate.config import Config
from tests.server.harness import Served


def call(worker: Any, function_id: str, payload: Any) -> Any:
    return worker.trigger({"function_id": function_id, "payload": payload})


def error_of(worker: Any, function_id: str, payload: Any) -> InvocationError:
    with pytest.raises(InvocationError) as info:
        call(worker, function_id, payload)
    return info.value


def test_every_state_function(server: Served, workers: Callable[..., Any]) -> None:
    w = workers(server.url)
    assert call(w, "state::set", {"scope": "orders", "key": "o1", "value": {"n": 1}}) == {
        "old_value": None,
        "new_value": {"n": 1},
    }
    assert call(w, "state::set", {"scope": "orders", "key": "o1", "value": {"n": 2}}) == {
        "old_value": {"n": 1},
        "new_value": {"n": 2},
    }
    # `data` is the engine's alias of `value`; null is a value.
    assert call(w, "state::set", {"scope": "orders", "key": "o2", "data": None}) == {
        "old_value": None,
        "new_value": None,
    }
    assert call(w, "state::get", {"scope": "orders", "key": "o1"}) == {"n": 2}
    assert call(w, "state::get", {"scope": "orders", "key": "missing"}) is None
    assert call(w, "state::get", {"scope": "nowhere", "key": "o1"}) is None
    assert call(w, "state::set", {"scope": "orders", "key": "o3", "value": [1, "x"]})
    assert call(w, "state::list", {"scope": "orders"}) == [{"n": 2}, None, [1, "x"]]
    assert call(w, "state::list", {"scope": "nowhere"}) == []
    call(w, "state::set", {"scope": "audit", "key": "a", "value": 1})
    assert call(w, "state::list_groups", {}) == {"groups": ["audit", "orders"]}
    # delete returns the raw deleted value, and None for a missing key
    assert call(w, "state::delete", {"scope": "orders", "key": "o1"}) == {"n": 2}
    assert call(w, "state::delete", {"scope": "orders", "key": "o1"}) is None
    assert call(w, "state::get", {"scope": "orders", "key": "o1"}) is None
    assert server.store.get("orders", "o3") == [1, "x"]


def test_update_every_op_type(server: Served, workers: Callable[..., Any]) -> None:
    w = workers(server.url)
    created = call(
        w,
        "state::update",
        {"scope": "s", "key": "k", "ops": [{"type": "set", "path": "status", "value": "new"}]},
    )
    assert created == {"old_value": None, "new_value": {"status": "new"}}
    ops = [
        {"type": "merge", "path": "", "value": {"tags": ["a"], "n": 1, "drop": True}},
        {"type": "increment", "path": "n", "by": 5},
        {"type": "decrement", "path": "n", "by": 2},
        {"type": "append", "path": "tags", "value": "b"},
        {"type": "remove", "path": "drop"},
        {"type": "set", "path": "status", "value": "paid"},
    ]
    result = call(w, "state::update", {"scope": "s", "key": "k", "ops": ops})
    assert result == {
        "old_value": {"status": "new"},
        "new_value": {"status": "paid", "tags": ["a", "b"], "n": 4},
    }
    # a failing op is reported in `errors`; the others apply
    partial = call(
        w,
        "state::update",
        {
            "scope": "s",
            "key": "k",
            "ops": [
                {"type": "increment", "path": "status", "by": 1},
                {"type": "set", "path": "x", "value": 1},
            ],
        },
    )
    assert partial["new_value"]["x"] == 1
    assert [e["code"] for e in partial["errors"]] == ["increment.not_number"]
    assert "errors" not in call(w, "state::update", {"scope": "s", "key": "k", "ops": []})


def test_error_codes(make_server: Callable[..., Served], workers: Callable[..., Any]) -> None:
    served = make_server(max_value_bytes=64)
    w = workers(served.url)
    missing = error_of(w, "state::set", {"scope": "s", "key": "k"})
    assert missing.code == "deserialization_error"
    assert missing.message == "Failed to deserialize input for state::set: missing field `value`"
    wrong = error_of(w, "state::get", {"scope": 1, "key": "k"})
    assert wrong.code == "deserialization_error"
    assert "invalid type: integer `1`, expected a string" in wrong.message
    bad_op = error_of(w, "state::update", {"scope": "s", "key": "k", "ops": [{"type": "mul"}]})
    assert bad_op.code == "deserialization_error"
    too_big = error_of(w, "state::set", {"scope": "s", "key": "k", "value": "x" * 100})
    assert too_big.code == "VALUE_TOO_LARGE"
    assert too_big.message == (
        "value of 102 bytes exceeds the configured max_value_bytes limit of 64"
    )
    unknown = error_of(w, "nope::x", {})
    assert unknown.code == "function_not_found"
    assert unknown.message == "Function nope::x not found in namespace default"
    # nothing was written by the failed calls
    assert served.store.revision == 0


def test_missing_payload_is_an_error_not_a_hang(
    server: Served, workers: Callable[..., Any]
) -> None:
    # The SDK sends no `data` when `payload` is omitted; the engine would drop the frame
    # and the caller would wait for its timeout. evstate reads it as null.
    w = workers(server.url)
    with pytest.raises(InvocationError) as info:
        w.trigger({"function_id": "state::list_groups"})
    assert info.value.code == "deserialization_error"
    assert "invalid type: null, expected struct StateListGroupsInput" in info.value.message


def test_dotted_aliases(server: Served, workers: Callable[..., Any]) -> None:
    w = workers(server.url)
    call(w, "state.set", {"scope": "users", "key": "b", "value": 2})
    call(w, "state.set", {"scope": "users", "key": "a", "value": 1})
    assert call(w, "state.get", {"scope": "users", "key": "a"}) == 1
    assert call(w, "state.list", {"scope": "users"}) == {"a": 1, "b": 2}  # the doc's mapping
    assert call(w, "state::list", {"scope": "users"}) == [2, 1]  # the engine's values
    assert call(w, "state.update", {"scope": "users", "key": "a", "ops": []})["new_value"] == 1
    assert call(w, "state.list_groups", {}) == {"groups": ["users"]}
    assert call(w, "state.delete", {"scope": "users", "key": "a"}) == 1


def test_kv_server_functions(
    make_server: Callable[..., Served], workers: Callable[..., Any]
) -> None:
    served = make_server(config=Config(store_method="in_memory", kv_server=True))
    w = workers(served.url)
    assert call(w, "kv_server::set", {"index": "idx:a", "key": "k", "value": 1}) == {
        "old_value": None,
        "new_value": 1,
    }
    call(w, "kv_server::set", {"index": "idx:b", "key": "k", "value": 2})
    call(w, "kv_server::set", {"index": "other", "key": "k", "value": 3})
    assert call(w, "kv_server::get", {"index": "idx:a", "key": "k"}) == 1
    assert call(w, "kv_server::get", {"index": "idx:a", "key": "nope"}) is None
    update = call(
        w,
        "kv_server::update",
        {"index": "idx:a", "key": "j", "ops": [{"type": "increment", "path": "n", "by": 2}]},
    )
    assert update == {"old_value": None, "new_value": {"n": 2}}
    assert call(w, "kv_server::list", {"index": "idx:a"}) == [1, {"n": 2}]
    assert call(w, "kv_server::list_keys_with_prefix", {"prefix": "idx:"}) == ["idx:a", "idx:b"]
    assert call(w, "kv_server::delete", {"index": "idx:a", "key": "k"}) == {"old_value": 1}
    # the same store: a kv index is a state scope
    assert call(w, "state::get", {"scope": "idx:b", "key": "k"}) == 2
    assert error_of(w, "kv_server::get", {"key": "k"}).code == "deserialization_error"


def test_kv_server_absent_by_default(server: Served, workers: Callable[..., Any]) -> None:
    w = workers(server.url)
    assert error_of(w, "kv_server::get", {"index": "i", "key": "k"}).code == "function_not_found"
