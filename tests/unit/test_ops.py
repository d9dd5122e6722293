"""Unit tests for evstate.ops: UpdateOp wire shapes, parse_ops and the section 3.3 rule matrix.

Every case runs twice: ``[python]`` with the Python op engine alone, and ``[redis]`` with the
redis adapter's ``UPDATE`` script (its Lua fast path, on a real redis-server) beside it: each
``apply_update_ops`` call of the case is also run in Redis and must give the same stored text
and errors whenever the script does not decline (tests/redis/op_engines.py). The ``[redis]``
half is skipped without a redis-server binary (a failure under ``EVSTATE_REQUIRE_REDIS=1``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evstate.errors import InvalidRequestError, InvalidValueError
from evstate.ops import (
    DOC_URL,
    MAX_PATH_DEPTH,
    MAX_SEGMENT_BYTES,
    MAX_VALUE_DEPTH,
    MAX_VALUE_KEYS,
    OP_TYPES,
    PROTO_POLLUTION_KEYS,
    ParsedOp,
    UpdateOp,
    parse_ops,
)
from evstate.ops_apply import apply_update_ops as python_apply_update_ops
from evstate.values import validate_value

# ------------------------------------------------------------------ the two engines

_SECOND_ENGINE: list[Any] = []  # the redis fast path, while the [redis] half runs


@pytest.fixture(scope="session")
def redis_fast_path(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Any]:
    from tests.redis.op_engines import FastPathEngine
    from tests.redis.server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("ops-redis"), appendfsync="no").start()
    engine = FastPathEngine(server.url)
    yield engine
    summary = engine.report()  # shown after pytest's own summary (output is captured here)
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        pytestconfig.add_cleanup(lambda: reporter.write_line(summary))
    engine.close()
    server.stop()


@pytest.fixture(scope="module", params=["python", "redis"], autouse=True)
def op_engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """Module-scoped, so hypothesis's tests can run under both engines too."""
    if request.param == "redis":
        _SECOND_ENGINE.append(request.getfixturevalue("redis_fast_path"))
    yield request.param
    _SECOND_ENGINE.clear()


def apply_update_ops(
    current: Any, ops: list[ParsedOp], *, missing: bool
) -> tuple[Any, list[dict[str, Any]]]:
    """The Python engine; under ``[redis]`` the fast path must agree with it."""
    old_text = None if missing else json.dumps(current, separators=(",", ":"), ensure_ascii=False)
    new, errors = python_apply_update_ops(current, ops, missing=missing)
    for second in _SECOND_ENGINE:
        second.check(None if old_text is None else old_text.encode(), ops, new, errors)
    return new, errors


I64_MIN, I64_MAX, U64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
MISSING = object()  # marks "the key does not exist" in tables

set_ = UpdateOp.set
merge = UpdateOp.merge
inc = UpdateOp.increment
dec = UpdateOp.decrement
append = UpdateOp.append
remove = UpdateOp.remove


def run(old: Any, ops: list[Any]) -> tuple[Any, list[dict[str, Any]]]:
    """Parse and apply ``ops`` to a private copy of ``old`` (``MISSING``: no key)."""
    parsed = parse_ops(ops)
    if old is MISSING:
        return apply_update_ops({}, parsed, missing=True)
    return apply_update_ops(copy.deepcopy(old), parsed, missing=False)


def codes(errors: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(error["op_index"], error["code"]) for error in errors]


def only_error(old: Any, ops: list[Any]) -> dict[str, Any]:
    """Apply ops that must fail exactly once and leave ``old`` unchanged."""
    new, errors = run(old, ops)
    assert len(errors) == 1, errors
    assert new == ({} if old is MISSING else old)
    return errors[0]


def deserialization_error(ops: object) -> str:
    with pytest.raises(InvalidRequestError) as info:
        parse_ops(ops)
    assert info.value.code == "deserialization_error"
    assert not info.value.message.startswith("Failed to")
    return info.value.message


def nested_value(depth: int) -> dict[str, Any]:
    """An object whose engine json_depth is exactly ``depth`` (>= 1)."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


NON_OBJECTS = [None, True, 7, 1.5, "text", [1, 2]]
NON_OBJECT_NAMES = ["null", "boolean", "number", "number", "string", "array"]
NON_OBJECT_CASES = list(zip(NON_OBJECTS, NON_OBJECT_NAMES, strict=True))
ALL_KINDS_ON_KEY = [
    ("set", lambda p: set_(p, 1)),
    ("merge", lambda p: merge(p, {"x": 1})),
    ("increment", lambda p: inc(p, 1)),
    ("decrement", lambda p: dec(p, 1)),
    ("append", lambda p: append(p, 1)),
    ("remove", lambda p: remove(p)),
]


# ------------------------------------------------------------------ the engine's worked examples

WORKED_EXAMPLES = [
    ("missing-increment", MISSING, [inc("counter", 1)], {"counter": 1}, []),
    ("missing-append-root-string", MISSING, [append("", "hello")], "hello", []),
    (
        "missing-append-root-object",
        MISSING,
        [append("", {"kind": "chunk"})],
        [{"kind": "chunk"}],
        [],
    ),
    ("missing-remove", MISSING, [remove("missing")], {}, []),
    (
        "increment-mixed",
        {"count": 2, "bad": "value"},
        [inc("count", 3), inc("bad", 3), inc("missing", 3)],
        {"count": 5, "bad": "value", "missing": 3},
        [(1, "increment.not_number")],
    ),
    (
        "decrement",
        {"count": 5},
        [dec("count", 3), dec("missing", 3)],
        {"count": 2, "missing": -3},
        [],
    ),
    (
        "increment-null",
        {"inc": None},
        [inc("inc", 1)],
        {"inc": None},
        [(0, "increment.not_number")],
    ),
    ("set-root-no-value", {"": "x", "keep": True}, [set_("")], None, []),
    (
        "append-concat",
        {"transcript": "hello"},
        [append("transcript", " world")],
        {"transcript": "hello world"},
        [],
    ),
    (
        "append-to-object",
        {"events": {}},
        [append("events", "chunk")],
        {"events": {}},
        [(0, "append.type_mismatch")],
    ),
    (
        "append-dotted-key",
        {"user.name": ["A"], "user": {"name": ["B"]}},
        [append("user.name", "C")],
        {"user.name": ["A", "C"], "user": {"name": ["B"]}},
        [],
    ),
    ("merge-nested", {}, [merge(["a", "b", "c"], {"x": 1})], {"a": {"b": {"c": {"x": 1}}}}, []),
    ("merge-root-on-leaf", "leaf", [merge(None, {"a": 1})], "leaf", []),
    (
        "append-path-on-array-root",
        [1, 2, 3],
        [append(["a", "b"], "x")],
        [1, 2, 3],
        [(0, "append.target_not_object")],
    ),
    (
        "append-proto-skipped",
        {"buffer": []},
        [
            append("buffer", "first"),
            append(["__proto__", "polluted"], True),
            append("buffer", "third"),
        ],
        {"buffer": ["first", "third"]},
        [(1, "append.path.proto_polluted")],
    ),
    ("set-proto", {}, [set_("__proto__", True)], {}, [(0, "set.path.proto_polluted")]),
]


@pytest.mark.parametrize(
    ("old", "ops", "new", "expected"),
    [row[1:] for row in WORKED_EXAMPLES],
    ids=[row[0] for row in WORKED_EXAMPLES],
)
def test_reference_worked_example(old: Any, ops: list[Any], new: Any, expected: Any) -> None:
    result, errors = run(old, ops)
    assert result == new
    assert codes(errors) == expected


def test_error_object_has_exactly_the_engine_fields() -> None:
    _, errors = run({"name": "Ada"}, [inc("name", 1)])
    assert errors == [
        {
            "op_index": 0,
            "code": "increment.not_number",
            "message": "Expected number at path 'name', got string.",
            "doc_url": "https://iii.dev/docs/workers/iii-state#error-codes",
        }
    ]
    assert DOC_URL == "https://iii.dev/docs/workers/iii-state#error-codes"


def test_no_errors_gives_an_empty_error_list() -> None:
    assert run({"a": 1}, [set_("b", 2), inc("a", 1)]) == ({"a": 2, "b": 2}, [])


def test_op_index_is_the_index_in_the_original_list() -> None:
    _, errors = run(
        {"bad": "value", "events": {}},
        [inc("bad", 1), set_("__proto__", True), append("events", "chunk"), set_("ok", True)],
    )
    assert codes(errors) == [
        (0, "increment.not_number"),
        (1, "set.path.proto_polluted"),
        (2, "append.type_mismatch"),
    ]


def test_failed_ops_are_skipped_and_later_ops_still_apply() -> None:
    new, errors = run({"n": "x"}, [set_("a", 1), inc("n", 1), set_("b", 2)])
    assert new == {"n": "x", "a": 1, "b": 2}
    assert codes(errors) == [(1, "increment.not_number")]


# --------------------------------------------------------------------------- path validation


@pytest.mark.parametrize("kind", ["merge", "append"])
def test_path_of_32_segments_is_allowed(kind: str) -> None:
    path = [f"k{i}" for i in range(MAX_PATH_DEPTH)]
    op = merge(path, {"x": 1}) if kind == "merge" else append(path, 1)
    _, errors = run({}, [op])
    assert errors == []


@pytest.mark.parametrize("kind", ["merge", "append"])
def test_path_of_33_segments_is_too_deep(kind: str) -> None:
    path = [f"k{i}" for i in range(MAX_PATH_DEPTH + 1)]
    op = merge(path, {"x": 1}) if kind == "merge" else append(path, 1)
    error = only_error({}, [op])
    assert error["code"] == f"{kind}.path.too_deep"
    assert error["message"] == "Path depth 33 exceeds maximum of 32"


def test_too_deep_is_checked_before_the_segments() -> None:
    path = ["__proto__", *(["k"] * MAX_PATH_DEPTH)]
    assert only_error({}, [merge(path, {"x": 1})])["code"] == "merge.path.too_deep"


@pytest.mark.parametrize(
    ("kind", "op"),
    [
        ("merge", merge(["a", ""], {"x": 1})),
        ("merge", merge([""], {"x": 1})),
        ("append", append(["", "b"], 1)),
    ],
)
def test_empty_segment_in_a_segment_list_is_rejected(kind: str, op: UpdateOp) -> None:
    error = only_error({}, [op])
    assert error["code"] == f"{kind}.path.empty_segment"
    assert error["message"] == "Path contains an empty segment"


@pytest.mark.parametrize(
    "segment",
    ["a" * 256, "é" * 128, "€" * 85 + "a", "😀" * 64],
    ids=["ascii-256", "2byte-256", "3byte-256", "4byte-256"],
)
@pytest.mark.parametrize(("kind", "build"), ALL_KINDS_ON_KEY, ids=[k for k, _ in ALL_KINDS_ON_KEY])
def test_segment_of_256_utf8_bytes_is_allowed(kind: str, build: Any, segment: str) -> None:
    _, errors = run({}, [build(segment)])
    assert errors == []


@pytest.mark.parametrize(
    ("segment", "size"),
    [("a" * 257, 257), ("é" * 128 + "a", 257), ("€" * 86, 258), ("😀" * 65, 260), ("é" * 129, 258)],
    ids=["ascii-257", "2byte-257", "3byte-258", "4byte-260", "2byte-258"],
)
@pytest.mark.parametrize(("kind", "build"), ALL_KINDS_ON_KEY, ids=[k for k, _ in ALL_KINDS_ON_KEY])
def test_segment_over_256_utf8_bytes_is_too_long(
    kind: str, build: Any, segment: str, size: int
) -> None:
    error = only_error({}, [build(segment)])
    assert error["code"] == f"{kind}.path.segment_too_long"
    assert error["message"] == f"Path segment of {size} bytes exceeds maximum of 256"


@pytest.mark.parametrize("sink", PROTO_POLLUTION_KEYS)
@pytest.mark.parametrize(("kind", "build"), ALL_KINDS_ON_KEY, ids=[k for k, _ in ALL_KINDS_ON_KEY])
def test_proto_pollution_segment_is_rejected_for_every_op(kind: str, build: Any, sink: str) -> None:
    error = only_error({"safe": {}}, [build(sink)])
    assert error["code"] == f"{kind}.path.proto_polluted"
    assert error["message"] == f"Path segment '{sink}' is not allowed (prototype pollution)."


@pytest.mark.parametrize(
    "path", [["constructor", "b"], ["a", "constructor", "b"], ["safe", "prototype"]]
)
def test_proto_pollution_anywhere_in_a_nested_path_creates_nothing(path: list[str]) -> None:
    error = only_error({"safe": {}}, [append(path, "x")])
    assert error["code"] == "append.path.proto_polluted"
    error = only_error({"safe": {}}, [merge(path, {"x": 1})])
    assert error["code"] == "merge.path.proto_polluted"


def test_first_bad_segment_in_order_is_reported() -> None:
    error = only_error({}, [merge(["a", "prototype", ""], {"x": 1})])
    assert error["code"] == "merge.path.proto_polluted"


def test_dots_are_never_path_separators() -> None:
    new, errors = run({"a": {"b": 1}}, [set_("a.b", 2), merge(["x.y"], {"z": 1})])
    assert new == {"a": {"b": 1}, "a.b": 2, "x.y": {"z": 1}}
    assert errors == []


# --------------------------------------------------------------------------- set


def test_set_with_empty_path_replaces_the_root() -> None:
    assert run([1, 2], [set_("", {"fresh": True})]) == ({"fresh": True}, [])


def test_set_without_value_stores_null() -> None:
    assert run({"a": 1}, [{"type": "set", "path": "a"}]) == ({"a": None}, [])
    assert run({"a": 1}, [{"type": "set", "path": "a", "value": None}]) == ({"a": None}, [])


def test_set_adds_or_overwrites_a_first_level_key() -> None:
    assert run({"a": 1, "b": 2}, [set_("a", [1]), set_("c", "x")]) == (
        {"a": [1], "b": 2, "c": "x"},
        [],
    )


@pytest.mark.parametrize(("root", "name"), NON_OBJECT_CASES)
def test_set_on_non_object_root_is_target_not_object(root: Any, name: str) -> None:
    error = only_error(root, [set_("a", 1)])
    assert error["code"] == "set.target_not_object"
    assert error["message"] == f"Cannot set at path 'a': target is {name}, expected object."


# --------------------------------------------------------------------------- merge


@pytest.mark.parametrize("path", [None, "", []], ids=["none", "empty-string", "empty-list"])
def test_merge_root_paths_all_mean_the_root(path: Any) -> None:
    assert run({"a": 1, "b": {"x": 1}}, [merge(path, {"b": {"y": 2}, "c": 3})]) == (
        {"a": 1, "b": {"y": 2}, "c": 3},
        [],
    )


def test_merge_root_without_path_key_on_the_wire() -> None:
    assert run({"a": 1}, [{"type": "merge", "value": {"b": 2}}]) == ({"a": 1, "b": 2}, [])


@pytest.mark.parametrize("root", NON_OBJECTS, ids=repr)
def test_merge_root_on_non_object_is_a_silent_no_op(root: Any) -> None:
    assert run(root, [merge(None, {"a": 1})]) == (root, [])


def test_merge_at_single_key_equals_single_segment_list() -> None:
    assert run({}, [merge("foo", {"x": 1})]) == run({}, [merge(["foo"], {"x": 1})])
    assert run({}, [merge("foo", {"x": 1})]) == ({"foo": {"x": 1}}, [])


def test_merge_nested_shallowly_merges_into_existing_object() -> None:
    old = {"sessions": {"abc": {"author": "old", "topic": "kept"}}}
    assert run(old, [merge(["sessions", "abc"], {"author": "new"})]) == (
        {"sessions": {"abc": {"author": "new", "topic": "kept"}}},
        [],
    )


def test_merge_nested_replaces_non_object_intermediates() -> None:
    old = {"sessions": {"abc": "garbage"}, "list": [1]}
    new, errors = run(old, [merge(["sessions", "abc"], {"a": 1}), merge(["list", "x"], {"b": 2})])
    assert new == {"sessions": {"abc": {"a": 1}}, "list": {"x": {"b": 2}}}
    assert errors == []


@pytest.mark.parametrize("root", NON_OBJECTS, ids=repr)
def test_merge_nested_replaces_a_non_object_root_by_an_object(root: Any) -> None:
    assert run(root, [merge(["a"], {"x": 1})]) == ({"a": {"x": 1}}, [])


@pytest.mark.parametrize("value", [None, True, 3, 1.5, "str", [{"a": 1}]], ids=repr)
def test_merge_non_object_value_is_not_an_object(value: Any) -> None:
    error = only_error({"a": 1}, [merge("foo", value)])
    assert error["code"] == "merge.value.not_an_object"
    assert error["message"] == "Merge value must be a JSON object"


def test_merge_value_with_1024_keys_is_allowed() -> None:
    value = {f"k{i}": i for i in range(MAX_VALUE_KEYS)}
    new, errors = run({}, [merge(None, value)])
    assert errors == []
    assert new == value


def test_merge_value_with_1025_keys_is_too_many_keys() -> None:
    error = only_error({}, [merge(None, {f"k{i}": i for i in range(MAX_VALUE_KEYS + 1)})])
    assert error["code"] == "merge.value.too_many_keys"
    assert error["message"] == "Merge value has 1025 top-level keys, exceeds maximum of 1024"


@pytest.mark.parametrize("sink", PROTO_POLLUTION_KEYS)
def test_merge_value_proto_top_level_key_is_proto_polluted(sink: str) -> None:
    error = only_error({}, [merge("foo", {"ok": 1, sink: {"polluted": True}})])
    assert error["code"] == "merge.value.proto_polluted"
    assert error["message"] == f'Merge value top-level key "{sink}" is a prototype-pollution sink'


def test_merge_value_with_several_proto_keys_names_the_first_in_byte_order() -> None:
    error = only_error({}, [merge(None, {"prototype": 1, "constructor": 2})])
    assert '"constructor"' in error["message"]


def test_merge_value_proto_key_below_the_top_level_is_allowed() -> None:
    assert run({}, [merge(None, {"a": {"__proto__": 1}})]) == ({"a": {"__proto__": 1}}, [])


def test_merge_value_of_depth_16_is_allowed() -> None:
    _, errors = run({}, [merge("foo", nested_value(MAX_VALUE_DEPTH))])
    assert errors == []


def test_merge_value_of_depth_17_is_too_deep() -> None:
    error = only_error({}, [merge("foo", nested_value(MAX_VALUE_DEPTH + 1))])
    assert error["code"] == "merge.value.too_deep"
    assert error["message"] == "Merge value JSON nesting depth 17 exceeds maximum of 16"


def test_merge_value_depth_counts_arrays_and_the_deepest_branch() -> None:
    value: dict[str, Any] = {"flat": 1, "deep": [[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]}
    error = only_error({}, [merge(None, value)])
    assert error["message"] == "Merge value JSON nesting depth 18 exceeds maximum of 16"


@pytest.mark.parametrize(
    ("op", "code"),
    [
        (merge(["__proto__"], "not an object"), "merge.path.proto_polluted"),
        (
            merge(None, {"__proto__": nested_value(20), **{f"k{i}": 0 for i in range(1025)}}),
            "merge.value.too_many_keys",
        ),
        (merge(None, {"__proto__": nested_value(20)}), "merge.value.proto_polluted"),
    ],
    ids=["path-before-value", "keys-before-proto", "proto-before-depth"],
)
def test_merge_checks_run_in_engine_order(op: UpdateOp, code: str) -> None:
    assert only_error({}, [op])["code"] == code


# --------------------------------------------------------------------------- increment / decrement


@pytest.mark.parametrize(
    ("op", "new"),
    [
        (inc("n", 3), {"n": 5}),
        (dec("n", 3), {"n": -1}),
        (inc("n", -3), {"n": -1}),
        (dec("n", -3), {"n": 5}),
    ],
)
def test_arithmetic_on_an_existing_integer(op: UpdateOp, new: Any) -> None:
    assert run({"n": 2}, [op]) == (new, [])


def test_increment_and_decrement_default_by_is_one() -> None:
    assert run({"n": 2}, [inc("n"), inc("n"), dec("n")]) == ({"n": 3}, [])


def test_absent_field_is_set_to_by_or_minus_by() -> None:
    assert run({}, [inc("a", 7), dec("b", 7)]) == ({"a": 7, "b": -7}, [])


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, "null"),
        (True, "boolean"),
        (False, "boolean"),
        ("1", "string"),
        ([1], "array"),
        ({}, "object"),
    ],
    ids=repr,
)
@pytest.mark.parametrize("kind", ["increment", "decrement"])
def test_arithmetic_on_a_non_number_field_is_not_number(kind: str, value: Any, name: str) -> None:
    error = only_error({"f": value}, [UpdateOp(kind, "f", by=1)])
    assert error["code"] == f"{kind}.not_number"
    assert error["message"] == f"Expected number at path 'f', got {name}."


def test_increment_on_null_field_is_not_number() -> None:
    assert only_error({"inc": None}, [inc("inc", 1)])["code"] == "increment.not_number"


def test_increment_on_bool_field_is_not_number_although_python_bool_is_int() -> None:
    assert only_error({"flag": True}, [inc("flag", 0)])["code"] == "increment.not_number"


def test_by_zero_still_type_checks_the_field() -> None:
    new, errors = run({"bad": "value", "count": 2}, [inc("bad", 0), dec("count", 0)])
    assert new == {"bad": "value", "count": 2}
    assert codes(errors) == [(0, "increment.not_number")]


def test_float_field_gives_a_float_result() -> None:
    new, _ = run({"a": 1.5, "b": 2.0, "c": 1.5}, [inc("a", 2), inc("b", 1), dec("c", 1)])
    assert new == {"a": 3.5, "b": 3.0, "c": 0.5}
    assert type(new["b"]) is float


def test_integer_result_stays_an_int() -> None:
    new, _ = run({"n": 0}, [inc("n", 1)])
    assert type(new["n"]) is int


@pytest.mark.parametrize(
    ("start", "op", "result"),
    [
        (I64_MAX, inc("n", 1), I64_MAX + 1),
        (I64_MAX + 10, inc("n", 1), I64_MAX + 11),
        (I64_MAX + 10, dec("n", 1), I64_MAX + 9),
        (U64_MAX - 1, inc("n", 1), U64_MAX),
        (U64_MAX, dec("n", I64_MAX), U64_MAX - I64_MAX),
        (0, dec("n", I64_MIN), 2**63),
        (I64_MIN + 1, dec("n", 1), I64_MIN),
        (I64_MAX + 1, inc("n", I64_MIN), 0),
    ],
    ids=str,
)
def test_integer_results_are_exact_from_i64_min_to_u64_max(
    start: int, op: UpdateOp, result: int
) -> None:
    assert run({"n": start}, [op]) == ({"n": result}, [])


@pytest.mark.parametrize(
    ("start", "op"),
    [
        (U64_MAX, inc("n", 1)),
        (I64_MIN, dec("n", 1)),
        (I64_MIN, inc("n", -1)),
        (U64_MAX, dec("n", -1)),
    ],
    ids=str,
)
def test_integer_result_outside_i64_min_to_u64_max_is_not_number(start: int, op: UpdateOp) -> None:
    error = only_error({"n": start}, [op])
    assert error["code"] == f"{op.type}.not_number"
    assert error["message"] == "Expected number at path 'n', got number."


def test_decrement_of_absent_field_by_i64_min_gives_two_to_the_63() -> None:
    assert run({}, [dec("n", I64_MIN)]) == ({"n": 2**63}, [])


@pytest.mark.parametrize("kind", ["increment", "decrement"])
@pytest.mark.parametrize(("root", "name"), NON_OBJECT_CASES)
def test_arithmetic_on_a_key_of_a_non_object_is_target_not_object(
    kind: str, root: Any, name: str
) -> None:
    error = only_error(root, [UpdateOp(kind, "a", by=1)])
    assert error["code"] == f"{kind}.target_not_object"
    assert error["message"] == f"Cannot {kind} at path 'a': target is {name}, expected object."


def test_root_arithmetic_on_an_existing_number() -> None:
    assert run(2, [inc("", 3)]) == (5, [])
    assert run(5, [dec("", 3)]) == (2, [])
    assert run(0.5, [inc("", 1)]) == (1.5, [])


@pytest.mark.parametrize(
    ("root", "name"), [({}, "object"), ("s", "string"), (None, "null"), (False, "boolean")]
)
def test_root_arithmetic_on_an_existing_non_number_is_not_number(root: Any, name: str) -> None:
    error = only_error(root, [dec("", 1)])
    assert error["code"] == "decrement.not_number"
    assert error["message"] == f"Expected number at path 'root', got {name}."


# --------------------------------------------------------------------------- append


def test_append_root_on_missing_key_starts_by_value_kind() -> None:
    assert run(MISSING, [append(None, "s")]) == ("s", [])
    assert run(MISSING, [append(None, 5)]) == ([5], [])
    assert run(MISSING, [append(None, [1, 2])]) == ([[1, 2]], [])


def test_append_root_on_existing_targets() -> None:
    assert run([1], [append(None, [2])]) == ([1, [2]], [])
    assert run("ab", [append("", "c")]) == ("abc", [])
    assert run(None, [append(None, "x")]) == ("x", [])
    assert run(None, [append(None, {"k": 1})]) == ([{"k": 1}], [])


def test_append_non_string_to_string_is_type_mismatch() -> None:
    error = only_error({"t": "hello"}, [append("t", {"not": "string"})])
    assert error["code"] == "append.type_mismatch"
    assert error["message"] == "Expected string append value at path 't', got object."
    error = only_error("hello", [append(None, 5)])
    assert error["message"] == "Expected string append value at path 'root', got number."


@pytest.mark.parametrize(
    ("target", "name"),
    [({}, "object"), (3, "number"), (2.5, "number"), (True, "boolean")],
    ids=repr,
)
def test_append_to_object_number_or_bool_is_type_mismatch(target: Any, name: str) -> None:
    tail = "expected array, string, null, or missing field."
    error = only_error({"f": target}, [append("f", "x")])
    assert error["code"] == "append.type_mismatch"
    assert error["message"] == f"Cannot append at path 'f': target is {name}, {tail}"
    error = only_error(target, [append(None, "x")])
    assert error["message"] == f"Cannot append at path 'root': target is {name}, {tail}"


def test_append_to_first_level_key_by_target_kind() -> None:
    old = {"arr": [1], "s": "a", "nul": None, "nul2": None}
    ops = [append("arr", [2]), append("s", "b"), append("nul", "c"), append("nul2", 4)]
    assert run(old, ops) == ({"arr": [1, [2]], "s": "ab", "nul": "c", "nul2": [4]}, [])


def test_append_to_missing_first_level_key_keeps_a_string_a_string() -> None:
    assert run({}, [append("t", "hello"), append("e", {"kind": "chunk"})]) == (
        {"t": "hello", "e": [{"kind": "chunk"}]},
        [],
    )


def test_append_single_segment_list_behaves_like_the_string_path() -> None:
    assert run({}, [append(["t"], "hello")]) == ({"t": "hello"}, [])


def test_append_nested_pushes_to_an_existing_array() -> None:
    old = {"entityId": {"buffer": ["a"]}}
    assert run(old, [append(["entityId", "buffer"], "b")]) == (
        {"entityId": {"buffer": ["a", "b"]}},
        [],
    )


def test_append_nested_creates_intermediates_and_missing_leaf_is_always_an_array() -> None:
    assert run({}, [append(["entityId", "buffer"], "a")]) == ({"entityId": {"buffer": ["a"]}}, [])
    assert run({"e": {}}, [append(["e", "b"], "x")]) == ({"e": {"b": ["x"]}}, [])


def test_append_nested_replaces_array_intermediate_by_object() -> None:
    assert run({"a": [1, 2, 3]}, [append(["a", "b"], 42)]) == ({"a": {"b": [42]}}, [])


def test_append_nested_existing_leaf_follows_target_rules() -> None:
    old = {"p": {"s": "ab", "n": None}}
    assert run(old, [append(["p", "s"], "c"), append(["p", "n"], "x")]) == (
        {"p": {"s": "abc", "n": "x"}},
        [],
    )


def test_append_nested_to_object_leaf_is_type_mismatch_labelled_by_the_leaf_key() -> None:
    error = only_error({"entityId": {"buffer": {"x": "y"}}}, [append(["entityId", "buffer"], "z")])
    assert error["code"] == "append.type_mismatch"
    assert error["message"] == (
        "Cannot append at path 'buffer': target is object, "
        "expected array, string, null, or missing field."
    )


@pytest.mark.parametrize(("root", "name"), NON_OBJECT_CASES)
def test_append_path_on_non_object_root_is_target_not_object_before_any_change(
    root: Any, name: str
) -> None:
    error = only_error(root, [append(["a", "b"], "x")])
    assert error["code"] == "append.target_not_object"
    assert error["message"] == f"Cannot append at path '[a, b]': target is {name}, expected object."


def test_append_target_not_object_label_is_bracketed_even_for_one_segment() -> None:
    error = only_error("leaf", [append("a", "x")])
    assert error["message"] == "Cannot append at path '[a]': target is string, expected object."


def test_append_array_value_is_pushed_as_one_element() -> None:
    assert run({"e": []}, [append("e", ["nested", "array"])]) == ({"e": [["nested", "array"]]}, [])


def test_append_preserves_op_order() -> None:
    assert run({"e": []}, [append("e", "first"), append("e", "second")]) == (
        {"e": ["first", "second"]},
        [],
    )


# --------------------------------------------------------------------------- remove


def test_remove_with_empty_path_makes_the_root_null() -> None:
    assert run({"": "x", "keep": True}, [remove("")]) == (None, [])


def test_remove_deletes_a_present_key_and_ignores_an_absent_one() -> None:
    assert run({"a": 1, "b": 2}, [remove("a"), remove("a"), remove("zzz")]) == ({"b": 2}, [])


@pytest.mark.parametrize(("root", "name"), NON_OBJECT_CASES)
def test_remove_on_non_object_root_is_target_not_object(root: Any, name: str) -> None:
    error = only_error(root, [remove("a")])
    assert error["code"] == "remove.target_not_object"
    assert error["message"] == f"Cannot remove at path 'a': target is {name}, expected object."


# ---------------------------------------------------------------------------- missing key


def test_empty_ops_on_missing_key_gives_empty_object() -> None:
    assert apply_update_ops({"ignored": 1}, [], missing=True) == ({}, [])


def test_missing_key_ignores_the_current_argument() -> None:
    assert apply_update_ops("anything", parse_ops([set_("a", 1)]), missing=True) == ({"a": 1}, [])


@pytest.mark.parametrize(
    ("op", "new"),
    [
        (inc("", 5), 5),
        (dec("", 5), -5),
        (dec("", I64_MIN), 2**63),
        (append(None, "s"), "s"),
        (append(None, 1), [1]),
    ],
    ids=str,
)
def test_root_op_on_missing_key_starts_from_scratch(op: UpdateOp, new: Any) -> None:
    assert run(MISSING, [op]) == (new, [])


@pytest.mark.parametrize(
    "first",
    [
        set_("a", 1),
        inc("a", 1),
        dec("a", 1),
        remove("a"),
        merge(None, {"a": 1}),
        merge("a", {}),
        append("a", 1),
    ],
    ids=lambda op: op.type,
)
def test_after_a_successful_op_the_key_no_longer_counts_as_missing(first: UpdateOp) -> None:
    new, errors = run(MISSING, [first, inc("", 1)])
    assert codes(errors) == [(1, "increment.not_number")]
    assert isinstance(new, dict)


def test_failed_ops_leave_the_key_missing_for_later_root_ops() -> None:
    new, errors = run(MISSING, [set_("__proto__", 1), merge(None, "bad"), inc("", 5)])
    assert new == 5
    assert codes(errors) == [(0, "set.path.proto_polluted"), (1, "merge.value.not_an_object")]


def test_root_remove_then_root_increment_sees_null_not_missing() -> None:
    error = run(MISSING, [remove(""), inc("", 1)])[1][0]
    assert error["message"] == "Expected number at path 'root', got null."


def test_stored_null_is_not_missing() -> None:
    error = only_error(None, [inc("", 1)])
    assert error["code"] == "increment.not_number"
    assert run({}, [append(None, "x")])[1][0]["code"] == "append.type_mismatch"
    assert run(MISSING, [append(None, "x")]) == ("x", [])


def test_missing_key_field_ops_start_from_an_empty_object() -> None:
    assert run(MISSING, [inc("counter", 1), append("log", "a")]) == ({"counter": 1, "log": "a"}, [])


# --------------------------------------------------------------------------- isolation


def test_applied_values_share_nothing_with_the_ops() -> None:
    parsed = parse_ops(
        [set_("a", [1]), append("a", 2), merge("m", {"k": [1]}), append("l", {"x": []})]
    )
    first, _ = apply_update_ops({}, parsed, missing=True)
    first["m"]["k"].append("mutated")
    first["l"][0]["x"].append("mutated")
    second, _ = apply_update_ops({}, parsed, missing=True)
    assert second == {"a": [1, 2], "m": {"k": [1]}, "l": [{"x": []}]}
    assert parsed[0].value == [1]


# --------------------------------------------------------------------------- parse_ops: wire errors

VARIANTS = "`set`, `merge`, `increment`, `decrement`, `append`, `remove`"

WIRE_ERRORS: list[tuple[str, object, str]] = [
    ("ops-map", {"type": "set"}, "invalid type: map, expected a sequence"),
    ("ops-null", None, "invalid type: null, expected a sequence"),
    ("ops-string", "x", 'invalid type: string "x", expected a sequence'),
    ("ops-int", 5, "invalid type: integer `5`, expected a sequence"),
    ("ops-bool", True, "invalid type: boolean `true`, expected a sequence"),
    ("item-int", [5], "invalid type: integer `5`, expected internally tagged enum UpdateOp"),
    ("item-null", [None], "invalid type: null, expected internally tagged enum UpdateOp"),
    (
        "item-string",
        ["set"],
        'invalid type: string "set", expected internally tagged enum UpdateOp',
    ),
    ("item-list", [[]], "invalid type: sequence, expected internally tagged enum UpdateOp"),
    ("no-type", [{"path": "a"}], "missing field `type`"),
    (
        "unknown-type",
        [{"type": "multiply"}],
        f"unknown variant `multiply`, expected one of {VARIANTS}",
    ),
    (
        "type-case",
        [{"type": "Set", "path": "a"}],
        f"unknown variant `Set`, expected one of {VARIANTS}",
    ),
    ("type-int", [{"type": 5}], "invalid type: integer `5`, expected variant identifier"),
    ("type-null", [{"type": None}], "invalid type: null, expected variant identifier"),
    ("set-no-path", [{"type": "set", "value": 1}], "missing field `path`"),
    ("merge-no-value", [{"type": "merge", "path": "a"}], "missing field `value`"),
    ("increment-empty", [{"type": "increment"}], "missing field `path`"),
    ("increment-no-by", [{"type": "increment", "path": "a"}], "missing field `by`"),
    ("decrement-no-by", [{"type": "decrement", "path": "a"}], "missing field `by`"),
    ("decrement-no-path", [{"type": "decrement", "by": 1}], "missing field `path`"),
    ("append-no-value", [{"type": "append", "path": "a"}], "missing field `value`"),
    ("remove-no-path", [{"type": "remove"}], "missing field `path`"),
    ("set-path-int", [{"type": "set", "path": 5}], "invalid type: integer `5`, expected a string"),
    ("set-path-null", [{"type": "set", "path": None}], "invalid type: null, expected a string"),
    (
        "set-path-list",
        [{"type": "set", "path": ["a"]}],
        "invalid type: sequence, expected a string",
    ),
    (
        "inc-path-bool",
        [{"type": "increment", "path": True, "by": 1}],
        "invalid type: boolean `true`, expected a string",
    ),
    ("remove-path-map", [{"type": "remove", "path": {}}], "invalid type: map, expected a string"),
    (
        "dec-path-float",
        [{"type": "decrement", "path": 1.0, "by": 1}],
        "invalid type: floating point `1.0`, expected a string",
    ),
    (
        "merge-path-int",
        [{"type": "merge", "path": 5, "value": {}}],
        "data did not match any variant of untagged enum MergePath",
    ),
    (
        "merge-path-mixed",
        [{"type": "merge", "path": ["a", 1], "value": {}}],
        "data did not match any variant of untagged enum MergePath",
    ),
    (
        "append-path-map",
        [{"type": "append", "path": {"a": 1}, "value": 1}],
        "data did not match any variant of untagged enum MergePath",
    ),
    (
        "append-path-bool",
        [{"type": "append", "path": False, "value": 1}],
        "data did not match any variant of untagged enum MergePath",
    ),
    (
        "by-float",
        [{"type": "increment", "path": "a", "by": 1.5}],
        "invalid type: floating point `1.5`, expected i64",
    ),
    (
        "by-float-integral",
        [{"type": "decrement", "path": "a", "by": 2.0}],
        "invalid type: floating point `2.0`, expected i64",
    ),
    (
        "by-float-exp",
        [{"type": "increment", "path": "a", "by": 1e20}],
        "invalid type: floating point `1e20`, expected i64",
    ),
    (
        "by-float-small",
        [{"type": "increment", "path": "a", "by": 1.5e-7}],
        "invalid type: floating point `1.5e-7`, expected i64",
    ),
    (
        "by-bool",
        [{"type": "increment", "path": "a", "by": True}],
        "invalid type: boolean `true`, expected i64",
    ),
    (
        "by-string",
        [{"type": "increment", "path": "a", "by": "1"}],
        'invalid type: string "1", expected i64',
    ),
    (
        "by-null",
        [{"type": "increment", "path": "a", "by": None}],
        "invalid type: null, expected i64",
    ),
    (
        "by-list",
        [{"type": "increment", "path": "a", "by": [1]}],
        "invalid type: sequence, expected i64",
    ),
    (
        "by-u64",
        [{"type": "increment", "path": "a", "by": 2**63}],
        "invalid value: integer `9223372036854775808`, expected i64",
    ),
    (
        "by-u64-max",
        [{"type": "increment", "path": "a", "by": U64_MAX}],
        f"invalid value: integer `{U64_MAX}`, expected i64",
    ),
    (
        "by-beyond-u64",
        [{"type": "increment", "path": "a", "by": 2**64}],
        "invalid type: floating point `1.8446744073709552e19`, expected i64",
    ),
    (
        "by-below-i64",
        [{"type": "decrement", "path": "a", "by": I64_MIN - 1}],
        "invalid type: floating point `-9.223372036854776e18`, expected i64",
    ),
    (
        "field-error-before-missing",
        [{"type": "increment", "by": 1.5}],
        "invalid type: floating point `1.5`, expected i64",
    ),
    ("string-escapes", 'a"b\n', 'invalid type: string "a\\"b\\n", expected a sequence'),
    (
        "second-item-bad",
        [{"type": "set", "path": "a"}, {"type": "nope"}],
        f"unknown variant `nope`, expected one of {VARIANTS}",
    ),
]


@pytest.mark.parametrize(
    ("raw", "message"), [row[1:] for row in WIRE_ERRORS], ids=[row[0] for row in WIRE_ERRORS]
)
def test_parse_ops_wire_error_uses_serde_wording(raw: object, message: str) -> None:
    assert deserialization_error(raw) == message


@pytest.mark.parametrize("by", [I64_MIN, -1, 0, I64_MAX], ids=str)
def test_by_accepts_the_whole_i64_range(by: int) -> None:
    assert parse_ops([{"type": "increment", "path": "a", "by": by}])[0].by == by


def test_unknown_extra_fields_are_ignored() -> None:
    parsed = parse_ops(
        [
            {"type": "set", "path": "a", "value": 1, "_caller_worker_id": "uuid", "by": 1.5},
            {"type": "remove", "path": "b", "value": {1, 2}},
            {"type": "increment", "path": "c", "by": 1, "value": "ignored"},
        ]
    )
    assert parsed == [
        ParsedOp("set", ("a",), 1),
        ParsedOp("remove", ("b",)),
        ParsedOp("increment", ("c",), None, 1),
    ]


@pytest.mark.parametrize(
    ("op", "segments"),
    [
        ({"type": "set", "path": ""}, ()),
        ({"type": "set", "path": "a.b"}, ("a.b",)),
        ({"type": "remove", "path": "x"}, ("x",)),
        ({"type": "merge", "value": {}}, ()),
        ({"type": "merge", "path": None, "value": {}}, ()),
        ({"type": "merge", "path": "", "value": {}}, ()),
        ({"type": "merge", "path": [], "value": {}}, ()),
        ({"type": "merge", "path": [""], "value": {}}, ("",)),
        ({"type": "append", "path": "a", "value": 1}, ("a",)),
        ({"type": "append", "path": ["a", "b"], "value": 1}, ("a", "b")),
    ],
    ids=repr,
)
def test_paths_are_normalized_to_segments(op: dict[str, Any], segments: tuple[str, ...]) -> None:
    assert parse_ops([op])[0].segments == segments


def test_non_json_op_value_fails_the_call_naming_the_op_index() -> None:
    good = {"type": "set", "path": "a", "value": 1}
    with pytest.raises(InvalidValueError) as info:
        parse_ops([good, good, {"type": "append", "path": "x", "value": {"x": [1, b"raw"]}}])
    assert info.value.path == "$.ops[2].value.x[1]"
    assert info.value.code == "deserialization_error"
    assert "$.ops[2].value.x[1] is a bytes" in info.value.message


def test_parse_ops_accepts_update_ops_dicts_and_tuples_mixed() -> None:
    parsed = parse_ops((inc("n", 2), {"type": "remove", "path": "x"}))
    assert parsed == [ParsedOp("increment", ("n",), None, 2), ParsedOp("remove", ("x",))]


def test_parse_ops_of_empty_list_is_empty() -> None:
    assert parse_ops([]) == []


def test_parse_ops_rechecks_an_update_op_value_mutated_after_construction() -> None:
    op = set_("a", {"items": []})
    op.value["items"].append({1})
    with pytest.raises(InvalidValueError) as info:
        parse_ops([op])
    assert info.value.path == "$.ops[0].value.items[0]"


# --------------------------------------------------------------------------- UpdateOp builders


@pytest.mark.parametrize(
    ("op", "wire"),
    [
        (set_("status", "active"), {"type": "set", "path": "status", "value": "active"}),
        (set_("status"), {"type": "set", "path": "status", "value": None}),
        (set_("", {"fresh": True}), {"type": "set", "path": "", "value": {"fresh": True}}),
        (merge(None, {"status": "active"}), {"type": "merge", "value": {"status": "active"}}),
        (
            merge("session-1", {"ts2": "b"}),
            {"type": "merge", "path": "session-1", "value": {"ts2": "b"}},
        ),
        (
            merge(["sessions", "abc"], {"author": "alice"}),
            {"type": "merge", "path": ["sessions", "abc"], "value": {"author": "alice"}},
        ),
        (merge("", {"a": 1}), {"type": "merge", "path": "", "value": {"a": 1}}),
        (merge([], {"a": 1}), {"type": "merge", "path": [], "value": {"a": 1}}),
        (inc("loginCount"), {"type": "increment", "path": "loginCount", "by": 1}),
        (inc("count", 5), {"type": "increment", "path": "count", "by": 5}),
        (dec("count", 2), {"type": "decrement", "path": "count", "by": 2}),
        (dec("count"), {"type": "decrement", "path": "count", "by": 1}),
        (
            append("events", {"kind": "chunk"}),
            {"type": "append", "path": "events", "value": {"kind": "chunk"}},
        ),
        (
            append(["entityId", "buffer"], "x"),
            {"type": "append", "path": ["entityId", "buffer"], "value": "x"},
        ),
        (append(None, "first"), {"type": "append", "value": "first"}),
        (append("a", None), {"type": "append", "path": "a", "value": None}),
        (remove("status"), {"type": "remove", "path": "status"}),
    ],
    ids=lambda v: v.type if isinstance(v, UpdateOp) else "",
)
def test_builder_produces_the_exact_iii_wire_dict(op: UpdateOp, wire: dict[str, Any]) -> None:
    assert op.to_dict() == wire
    assert list(op.to_dict()) == list(wire)  # same key order as the SDK
    assert parse_ops([wire]) == parse_ops([op])


def test_update_op_is_frozen() -> None:
    op = inc("n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        op.by = 2  # type: ignore[misc]


def test_to_dict_shares_no_mutable_parts_with_the_op() -> None:
    op = append(["a", "b"], {"list": [1]})
    wire = op.to_dict()
    wire["path"].append("c")
    wire["value"]["list"].append(2)
    assert op.to_dict() == {"type": "append", "path": ["a", "b"], "value": {"list": [1]}}


def test_path_list_is_copied_and_a_tuple_path_becomes_a_list() -> None:
    path = ["a", "b"]
    op = merge(path, {})
    path.append("c")
    assert op.path == ["a", "b"]
    assert append(("x", "y"), 1).to_dict()["path"] == ["x", "y"]


def test_merge_builder_allows_non_object_value_reported_later_by_apply() -> None:
    op = merge("a", 5)
    assert only_error({}, [op])["code"] == "merge.value.not_an_object"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: inc("a", 1.5), "invalid type: floating point `1.5`, expected i64"),  # type: ignore[arg-type]
        (lambda: dec("a", True), "invalid type: boolean `true`, expected i64"),
        (lambda: inc("a", 2**63), "invalid value: integer `9223372036854775808`, expected i64"),
        (lambda: set_(5, 1), "invalid type: integer `5`, expected a string"),  # type: ignore[arg-type]
        (lambda: remove(None), "missing field `path`"),  # type: ignore[arg-type]
        (lambda: inc(["a"]), "invalid type: sequence, expected a string"),  # type: ignore[arg-type]
        (lambda: merge(5, {}), "data did not match any variant of untagged enum MergePath"),  # type: ignore[arg-type]
        (lambda: append(["a", 1], 1), "data did not match any variant of untagged enum MergePath"),  # type: ignore[list-item]
        (
            lambda: UpdateOp("multiply", "a"),
            f"unknown variant `multiply`, expected one of {VARIANTS}",
        ),
        (lambda: UpdateOp("increment", "a"), "missing field `by`"),
        (lambda: UpdateOp("set", "a", 1, by=2), "field `by` does not belong to a `set` op"),
        (
            lambda: UpdateOp("remove", "a", value=1),
            "field `value` does not belong to a `remove` op",
        ),
    ],
)
def test_builder_rejects_bad_arguments_at_construction(build: Any, message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        build()
    assert info.value.message == message


def test_builder_rejects_non_json_value_at_construction() -> None:
    with pytest.raises(InvalidValueError) as info:
        set_("a", {"s": {1, 2}})
    assert info.value.path == "$.value.s"


def test_reference_wire_examples_parse() -> None:
    examples: list[dict[str, Any]] = [
        {"type": "set", "path": "status", "value": "active"},
        {"type": "set", "path": "", "value": {"fresh": True}},
        {"type": "merge", "value": {"status": "active"}},
        {"type": "merge", "path": "session-1", "value": {"ts2": "b"}},
        {"type": "merge", "path": ["sessions", "abc"], "value": {"author": "alice"}},
        {"type": "increment", "path": "count", "by": 1},
        {"type": "decrement", "path": "count", "by": 2},
        {"type": "append", "path": "events", "value": {"kind": "chunk"}},
        {"type": "append", "path": ["entityId", "buffer"], "value": "x"},
        {"type": "append", "value": "first"},
        {"type": "remove", "path": "status"},
    ]
    parsed = parse_ops(examples)
    assert [p.kind for p in parsed] == [e["type"] for e in examples]
    assert [UpdateOp(**e).to_dict() for e in examples] == examples


# --------------------------------------------------------------------------- properties

keys = st.sampled_from(["a", "b", "x.y", "", "__proto__", "é", "k" * 257])
key_lists = st.lists(st.sampled_from(["a", "b", "c", "", "constructor"]), max_size=4)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=I64_MIN, max_value=U64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "c", "__proto__", "n"]), children, max_size=3)
    ),
    max_leaves=12,
)
bys = st.integers(min_value=I64_MIN, max_value=I64_MAX) | st.integers(-3, 3)
merge_paths = st.none() | keys | key_lists
well_formed_ops = st.one_of(
    st.builds(UpdateOp.set, keys, json_values),
    st.builds(UpdateOp.merge, merge_paths, json_values),
    st.builds(UpdateOp.increment, keys, bys),
    st.builds(UpdateOp.decrement, keys, bys),
    st.builds(UpdateOp.append, merge_paths, json_values),
    st.builds(UpdateOp.remove, keys),
)
starts = st.just(MISSING) | json_values


@given(starts, st.lists(well_formed_ops, max_size=8))
def test_apply_never_raises_and_returns_json_data(old: Any, ops: list[UpdateOp]) -> None:
    new, errors = run(old, ops)
    validate_value(new)
    indexes = [error["op_index"] for error in errors]
    assert indexes == sorted(set(indexes))
    for error in errors:
        assert 0 <= error["op_index"] < len(ops)
        assert set(error) == {"op_index", "code", "message", "doc_url"}
        assert error["code"].startswith(ops[error["op_index"]].type + ".")
        assert error["doc_url"] == DOC_URL


@given(starts, st.lists(well_formed_ops, max_size=8))
def test_apply_does_not_mutate_op_values(old: Any, ops: list[UpdateOp]) -> None:
    before = [op.to_dict() for op in ops]
    new, _ = run(old, ops)
    if isinstance(new, dict | list):
        new.clear()
    assert [op.to_dict() for op in ops] == before


@given(well_formed_ops)
def test_wire_dict_of_any_op_parses_like_the_op(op: UpdateOp) -> None:
    assert parse_ops([op.to_dict()]) == parse_ops([op])
    assert op.type in OP_TYPES


@given(json_values)
def test_empty_op_list_leaves_an_existing_value_unchanged(old: Any) -> None:
    assert run(old, []) == (old, [])


def test_empty_op_list_on_missing_key_gives_empty_object() -> None:
    assert run(MISSING, []) == ({}, [])


def test_limits_match_the_engine() -> None:
    assert (MAX_PATH_DEPTH, MAX_SEGMENT_BYTES, MAX_VALUE_DEPTH, MAX_VALUE_KEYS) == (
        32,
        256,
        16,
        1024,
    )
    assert PROTO_POLLUTION_KEYS == ("__proto__", "constructor", "prototype")
    assert OP_TYPES == ("set", "merge", "increment", "decrement", "append", "remove")
