"""Unit tests for evstate.values: the JSON value rules and the CBOR value encoding."""

from __future__ import annotations

import datetime
import decimal
import enum
import math
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evstate.errors import CorruptionError, InvalidRequestError, InvalidValueError
from evstate.values import (
    INT_MAX,
    INT_MIN,
    MAX_NESTING,
    decode_value,
    encode_value,
    json_size,
    json_type_name,
    rust_debug_str,
    serde_unexpected,
    validate_value,
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=INT_MIN, max_value=INT_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=25,
)


def nested_lists(levels: int) -> list[Any]:
    """A list nested ``levels`` deep: 1 gives ``[]``, 2 gives ``[[]]``."""
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def nested_dicts(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def rejection(value: object, **kwargs: str) -> InvalidValueError:
    with pytest.raises(InvalidValueError) as info:
        validate_value(value, **kwargs)
    return info.value


class Color(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


# --------------------------------------------------------------------------- accepted


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -1,
        1.5,
        -0.0,
        "",
        "plain",
        "é 漢字 😀",
        [],
        {},
        [1, "a", None, [True, {"x": 1.0}]],
        {"a": {"b": [1, 2, {"c": None}]}, "": "empty key", "odd key": 1},
    ],
    ids=repr,
)
def test_json_data_is_accepted(value: object) -> None:
    validate_value(value)


@pytest.mark.parametrize("value", [INT_MIN, INT_MAX, 2**63 - 1, 2**63], ids=str)
def test_ints_within_i64_min_to_u64_max_are_accepted(value: int) -> None:
    validate_value(value)
    validate_value({"n": value})


def test_subclasses_of_json_types_are_accepted_and_decode_as_base_types() -> None:
    value = OrderedDict([("color", Color.RED), ("level", Level.HIGH)])
    validate_value(value)
    decoded = decode_value(encode_value(value))
    assert decoded == {"color": "red", "level": 3}
    assert type(decoded) is dict
    assert type(decoded["color"]) is str
    assert type(decoded["level"]) is int


@given(json_values)
def test_generated_json_values_are_accepted(value: Any) -> None:
    validate_value(value)


# --------------------------------------------------------------------------- rejected types


@pytest.mark.parametrize(
    ("value", "type_text"),
    [
        (b"raw", "a bytes"),
        (bytearray(b"raw"), "a bytearray"),
        ({1, 2}, "a set"),
        (frozenset({1}), "a frozenset"),
        ((1, 2), "a tuple"),
        (object(), "an object"),
        (1j, "a complex"),
        (range(3), "a range"),
        (decimal.Decimal("1.5"), "a decimal.Decimal"),
        (datetime.date(2024, 1, 1), "a datetime.date"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_non_json_types_are_rejected_naming_the_type(value: object, type_text: str) -> None:
    error = rejection(value)
    assert error.path == "$"
    assert error.message == (
        f"value at $ is {type_text}, which is not JSON data "
        "(allowed: dict with str keys, list, str, int, float, bool, None)"
    )


def test_rejection_message_names_the_nested_path_and_type() -> None:
    error = rejection({"tags": ["ok", {"x"}]})
    assert error.path == "$.tags[1]"
    assert str(error) == (
        "value at $.tags[1] is a set, which is not JSON data "
        "(allowed: dict with str keys, list, str, int, float, bool, None)"
    )


def test_invalid_value_error_is_a_deserialization_error() -> None:
    error = rejection(b"x")
    assert isinstance(error, InvalidRequestError)
    assert isinstance(error, ValueError)
    assert error.code == "deserialization_error"


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": b""}, "$.a"),
        ({"odd key": b""}, '$["odd key"]'),
        ({"a.b": b""}, '$["a.b"]'),
        ({"": b""}, '$[""]'),
        ({"1st": b""}, '$["1st"]'),
        ({'say "hi"': b""}, '$["say \\"hi\\""]'),
        ({"é": b""}, '$["é"]'),
        ({"_private9": b""}, "$._private9"),
        ({"items": [0, 1, b""]}, "$.items[2]"),
        ([[0, [b""]]], "$[0][1][0]"),
        ({"a": {"b": [{"c": b""}]}}, "$.a.b[0].c"),
    ],
)
def test_rejection_path_is_jsonpath_like(value: object, path: str) -> None:
    error = rejection(value)
    assert error.path == path
    assert error.message.startswith(f"value at {path} is a bytes,")


def test_first_problem_in_document_order_is_reported() -> None:
    error = rejection({"a": [1, {"deep": {1}}], "b": b"", "c": float("nan")})
    assert error.path == "$.a[1].deep"


def test_where_and_root_prefix_the_message_and_path() -> None:
    error = rejection({"x": {1}}, where="op value", root="$.ops[2].value")
    assert error.path == "$.ops[2].value.x"
    assert error.message.startswith("op value at $.ops[2].value.x is a set,")


@pytest.mark.parametrize("key", [1, None, 1.5, True, ("a",)], ids=repr)
def test_non_str_dict_keys_are_rejected(key: object) -> None:
    error = rejection({"outer": {key: 1}})
    assert error.path == "$.outer"
    assert f"has the key {key!r} of type {type(key).__name__}" in error.message
    assert "object keys must be str" in error.message


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf], ids=repr)
def test_nan_and_infinity_are_rejected(number: float) -> None:
    assert rejection(number).path == "$"
    error = rejection({"stats": [1.0, number]})
    assert error.path == "$.stats[1]"
    assert f"is the float {number!r}" in error.message
    assert "finite" in error.message


@pytest.mark.parametrize("number", [INT_MAX + 1, INT_MIN - 1, 10**30, -(10**30)], ids=str)
def test_ints_outside_i64_min_to_u64_max_are_rejected(number: int) -> None:
    error = rejection({"n": number})
    assert error.path == "$.n"
    assert f"is the integer {number}, outside the storable range" in error.message


def test_bool_is_accepted_as_boolean_not_checked_as_int() -> None:
    validate_value([True, False])
    assert json_type_name(True) == "boolean"


# --------------------------------------------------------------------------- strings


def test_lone_surrogate_in_string_is_rejected() -> None:
    error = rejection({"text": "ok \ud800"})
    assert error.path == "$.text"
    assert "lone surrogate" in error.message


def test_lone_surrogate_in_key_is_rejected() -> None:
    error = rejection({"in": {"bad \udfff": 1}})
    assert error.path == "$.in"
    assert "lone surrogate" in error.message


# --------------------------------------------------------------------------- nesting


@pytest.mark.parametrize("build", [nested_lists, nested_dicts])
def test_nesting_up_to_max_is_accepted(build: Any) -> None:
    validate_value(build(MAX_NESTING))


@pytest.mark.parametrize("build", [nested_lists, nested_dicts])
def test_nesting_beyond_max_is_rejected(build: Any) -> None:
    error = rejection(build(MAX_NESTING + 1))
    assert f"deeper than {MAX_NESTING} levels" in error.message


def test_deep_nesting_error_names_the_too_deep_container() -> None:
    error = rejection(nested_lists(MAX_NESTING + 1))
    assert error.path == "$" + "[0]" * MAX_NESTING


def test_reference_cycle_is_rejected_instead_of_hanging() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    assert "deeper than" in rejection(cycle).message
    loop: dict[str, Any] = {}
    loop["self"] = loop
    assert "deeper than" in rejection({"a": loop}).message


def test_max_nesting_is_512() -> None:
    assert MAX_NESTING == 512


# --------------------------------------------------------------------------- encoding


@given(json_values)
def test_encode_decode_round_trips_json_data(value: Any) -> None:
    decoded = decode_value(encode_value(value))
    assert decoded == value
    assert encode_value(decoded) == encode_value(value)


@pytest.mark.parametrize(
    "value",
    [3.0, -0.0, 2**64 - 1, -(2**63), 1e300, 5e-324, "😀", {"": None}],
    ids=repr,
)
def test_round_trip_keeps_exact_type_and_value(value: Any) -> None:
    decoded = decode_value(encode_value(value))
    assert decoded == value
    assert type(decoded) is type(value)
    if isinstance(value, float):
        assert math.copysign(1.0, decoded) == math.copysign(1.0, value)


def test_decode_returns_a_fresh_object_every_time() -> None:
    data = encode_value({"list": [1], "map": {"a": 1}})
    first = decode_value(data)
    second = decode_value(data)
    assert first == second
    assert first is not second
    first["list"].append(2)
    first["map"]["b"] = 2
    assert second == {"list": [1], "map": {"a": 1}}
    assert decode_value(data) == {"list": [1], "map": {"a": 1}}


def test_encoded_bytes_do_not_share_state_with_the_source_object() -> None:
    source = {"items": [1, 2]}
    data = encode_value(source)
    source["items"].append(3)
    assert decode_value(data) == {"items": [1, 2]}


@pytest.mark.parametrize("data", [b"", b"\xff", b"\x82\x01"], ids=repr)
def test_decoding_garbage_raises_corruption_error(data: bytes) -> None:
    with pytest.raises(CorruptionError, match="undecodable value"):
        decode_value(data)


def test_values_somewhat_deeper_than_max_nesting_still_decode() -> None:
    # Update ops can put a validated value under a 32-segment path plus one array.
    deep = nested_lists(MAX_NESTING + 33)
    assert decode_value(encode_value(deep)) == deep


# --------------------------------------------------------------------------- json_size


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (None, 4),
        (True, 4),
        (12, 2),
        ("", 2),
        ({"a": 1}, 7),
        ([1, 2, 3], 7),
        ({"a": [1, {"b": None}]}, 20),
        ("é", 4),
        ("😀", 6),
        ("\n", 4),
    ],
    ids=repr,
)
def test_json_size_is_compact_utf8_byte_length(value: Any, size: int) -> None:
    assert json_size(value) == size


# --------------------------------------------------------------------------- type names


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, "null"),
        (True, "boolean"),
        (False, "boolean"),
        (0, "number"),
        (2**64 - 1, "number"),
        (1.5, "number"),
        ("", "string"),
        ([], "array"),
        ({}, "object"),
        (Level.HIGH, "number"),
        (Color.RED, "string"),
    ],
    ids=repr,
)
def test_json_type_name_uses_engine_spelling(value: Any, name: str) -> None:
    assert json_type_name(value) == name


def test_json_type_name_rejects_non_json_types() -> None:
    with pytest.raises(InvalidValueError, match="is a set"):
        json_type_name({1})


# --------------------------------------------------------------------------- serde spellings


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "null"),
        (True, "boolean `true`"),
        (False, "boolean `false`"),
        (5, "integer `5`"),
        (-5, "integer `-5`"),
        (1.5, "floating point `1.5`"),
        (-1.5, "floating point `-1.5`"),
        (2.0, "floating point `2.0`"),
        (100.0, "floating point `100.0`"),
        (0.1, "floating point `0.1`"),
        (123.456, "floating point `123.456`"),
        (1e15, "floating point `1000000000000000.0`"),
        (1e16, "floating point `1e16`"),
        (1.2345e20, "floating point `1.2345e20`"),
        (0.0001, "floating point `0.0001`"),
        (0.00001, "floating point `0.00001`"),
        (0.000001, "floating point `1e-6`"),
        (1.5e-7, "floating point `1.5e-7`"),
        (5e-324, "floating point `5e-324`"),
        (0.0, "floating point `0.0`"),
        (-0.0, "floating point `-0.0`"),
        (math.nan, "floating point `NaN`"),
        (-math.inf, "floating point `-inf`"),
        ("x", 'string "x"'),
        ('say "hi"\n', 'string "say \\"hi\\"\\n"'),
        ("tab\there\\", 'string "tab\\there\\\\"'),
        ("\x01é", 'string "\\u{1}é"'),
        ([1], "sequence"),
        ((1,), "sequence"),
        ({"a": 1}, "map"),
        ({1}, "Python set"),
    ],
    ids=repr,
)
def test_serde_unexpected_matches_serde_json_wording(value: object, text: str) -> None:
    assert serde_unexpected(value) == text


def test_rust_debug_str_quotes_like_rust() -> None:
    assert rust_debug_str("__proto__") == '"__proto__"'
    assert rust_debug_str("a'b") == '"a\'b"'
    assert rust_debug_str("\0") == '"\\0"'
