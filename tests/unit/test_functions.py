"""store.call(): the iii function surface, both spellings."""

from __future__ import annotations

import pytest

import evstate


@pytest.mark.parametrize("sep", ["::", "."])
def test_all_six_functions_in_both_spellings(store: evstate.Store, sep: str) -> None:
    call = store.call
    assert call(f"state{sep}set", {"scope": "u", "key": "1", "value": {"n": 1}}) == {
        "old_value": None,
        "new_value": {"n": 1},
    }
    assert call(f"state{sep}get", {"scope": "u", "key": "1"}) == {"n": 1}
    assert call(f"state{sep}get", {"scope": "u", "key": "2"}) is None
    result = call(
        f"state{sep}update",
        {"scope": "u", "key": "1", "ops": [{"type": "increment", "path": "n", "by": 2}]},
    )
    assert result == {"old_value": {"n": 1}, "new_value": {"n": 3}}
    assert call(f"state{sep}list_groups", {}) == {"groups": ["u"]}
    assert call(f"state{sep}delete", {"scope": "u", "key": "1"}) == {"n": 3}
    assert call(f"state{sep}delete", {"scope": "u", "key": "1"}) is None


def test_list_shapes_differ_by_spelling(store: evstate.Store) -> None:
    store.set("s", "b", 2)
    store.set("s", "a", 1)
    assert store.call("state::list", {"scope": "s"}) == [2, 1]  # engine: values, insertion order
    assert store.call("state.list", {"scope": "s"}) == {"a": 1, "b": 2}  # doc: mapping
    assert store.call("state::list", {"scope": "none"}) == []


def test_data_alias_and_unknown_fields(store: evstate.Store) -> None:
    payload = {"scope": "s", "key": "k", "data": [1], "_caller_worker_id": "w-1", "extra": 5}
    assert store.call("state::set", payload)["new_value"] == [1]
    assert store.call("state::set", {"scope": "s", "key": "k", "value": None})["new_value"] is None


@pytest.mark.parametrize(
    ("function_id", "payload", "detail"),
    [
        ("state::set", {"scope": "s", "key": "k"}, "missing field `value`"),
        ("state::set", {"key": "k", "value": 1}, "missing field `scope`"),
        ("state::get", {"scope": "s", "key": 5}, "invalid type: integer `5`, expected a string"),
        ("state::get", None, "invalid type: null, expected struct StateGetInput"),
        ("state::update", {"scope": "s", "key": "k"}, "missing field `ops`"),
        ("state::list_groups", None, "invalid type: null, expected struct StateListGroupsInput"),
        ("state::list", {"scope": None}, "invalid type: null, expected a string"),
    ],
)
def test_bad_payloads(store: evstate.Store, function_id: str, payload: object, detail: str) -> None:
    from evstate.core.functions import call_function

    with pytest.raises(evstate.InvalidRequestError) as info:
        call_function(store, function_id, payload)
    assert info.value.code == "deserialization_error"
    assert str(info.value) == f"Failed to deserialize input for {function_id}: {detail}"
    assert store.revision == 0


def test_bad_ops_in_call_carry_the_prefix(store: evstate.Store) -> None:
    with pytest.raises(evstate.InvalidRequestError) as info:
        store.call(
            "state::update", {"scope": "s", "key": "k", "ops": [{"type": "multiply", "path": "x"}]}
        )
    assert str(info.value).startswith("Failed to deserialize input for state::update: ")
    assert "unknown variant `multiply`" in str(info.value)
    assert store.revision == 0


def test_unknown_function(store: evstate.Store) -> None:
    with pytest.raises(evstate.FunctionNotFoundError) as info:
        store.call("state::frobnicate", {})
    assert info.value.code == "function_not_found"


def test_value_too_large_code(tmp_path: object) -> None:
    with evstate.open(max_value_bytes=5) as store:
        with pytest.raises(evstate.ValueTooLargeError) as info:
            store.call("state.set", {"scope": "s", "key": "k", "value": "toolong"})
        assert info.value.code == "VALUE_TOO_LARGE"


def test_omitted_payload_means_empty_object(store: evstate.Store) -> None:
    assert store.call("state.list_groups") == {"groups": []}
