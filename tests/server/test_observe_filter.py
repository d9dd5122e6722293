"""The observer filter language of ``evstate serve`` (evstate.server.observe_filter).

Three checks: exact limits at their boundaries; Hypothesis against a small model written
here from the language's rules; and Hypothesis against the iii SDK's own evaluator
(``iii.filter``, installed with iii-sdk 0.25.0): the same filters accepted and refused, the
same documents matched, since the SDK's ``ready()`` relies on the server refusing exactly
what the language refuses.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iii.filter import FilterError as SdkFilterError
from iii.filter import compile_filter as sdk_compile

from evstate.server.observe_filter import FilterError, compile_filter

# ---- a model of the language, written from its rules --------------------------------------

MISSING = object()


def model_resolve(path: str, doc: dict[str, Any], element: Any) -> Any:
    root, *segments = path.split(".")
    if root == "@":
        value = element
    elif root in doc:
        value = doc[root]
    else:
        return MISSING
    for segment in segments:
        if isinstance(value, dict) and segment in value:
            value = value[segment]
        elif (
            isinstance(value, list)
            and segment.isdigit()
            and (segment == "0" or not segment.startswith("0"))
            and int(segment) < len(value)
        ):
            value = value[int(segment)]
        else:
            return MISSING
    return value


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def model_equal(value: Any, literal: Any) -> bool:
    if is_number(literal):
        return is_number(value) and float(value) == float(literal)
    if isinstance(literal, list):
        return (
            isinstance(value, list)
            and len(value) == len(literal)
            and all(model_equal(a, b) for a, b in zip(value, literal, strict=True))
        )
    if isinstance(literal, dict):
        return (
            isinstance(value, dict)
            and value.keys() == literal.keys()
            and all(model_equal(value[k], literal[k]) for k in literal)
        )
    return type(value) is type(literal) and value == literal


def model_compare(value: Any, bound: Any) -> int | None:
    if is_number(bound) and is_number(value):
        return (float(value) > float(bound)) - (float(value) < float(bound))
    if isinstance(bound, str) and isinstance(value, str):
        return (value > bound) - (value < bound)
    return None


def model_operator(name: str, operand: Any, value: Any, doc: dict[str, Any]) -> bool:
    present = value is not MISSING
    if name == "$eq":
        return present and model_equal(value, operand)
    if name == "$ne":
        return not present or not model_equal(value, operand)
    if name == "$in":
        return present and any(model_equal(value, item) for item in operand)
    if name == "$nin":
        return not present or not any(model_equal(value, item) for item in operand)
    if name == "$exists":
        return present == operand
    if name == "$prefix":
        return isinstance(value, str) and value.startswith(operand)
    if name == "$any":
        if not isinstance(value, list):
            return False
        if operand and all(k.startswith("$") and k not in ("$and", "$or", "$not") for k in operand):
            return any(
                all(model_operator(n, o, item, doc) for n, o in operand.items()) for item in value
            )
        return any(model_matches(operand, doc, item) for item in value)
    order = model_compare(value, operand)
    if order is None:
        return False
    return {"$gt": order > 0, "$gte": order >= 0, "$lt": order < 0, "$lte": order <= 0}[name]


def model_matches(filters: dict[str, Any], doc: dict[str, Any], element: Any = MISSING) -> bool:
    for key, value in filters.items():
        if key == "$and":
            ok = all(model_matches(f, doc, element) for f in value)
        elif key == "$or":
            ok = any(model_matches(f, doc, element) for f in value)
        elif key == "$not":
            ok = not model_matches(value, doc, element)
        else:
            found = model_resolve(key, doc, element)
            ok = all(model_operator(n, o, found, doc) for n, o in value.items())
        if not ok:
            return False
    return True


# ---- strategies ------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from([0.5, -1.0, 2.0, 1e15])
    | st.sampled_from(["", "a", "ab", "b", "é", "1"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "x", "0"]), inner, max_size=3)
    ),
    max_leaves=6,
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "input": st.fixed_dictionaries(
            {},
            optional={
                "a": values,
                "b": values,
                "list": st.lists(values, max_size=4),
                "obj": st.dictionaries(st.sampled_from(["x", "y"]), values, max_size=2),
            },
        )
        | values,
        "output": values,
        "error": st.fixed_dictionaries({"code": st.sampled_from(["E1", "E2"])}),
        "caller": st.fixed_dictionaries({"worker_name": st.sampled_from(["alice", "bob"])}),
        "metadata": st.dictionaries(st.sampled_from(["tag", "n"]), values, max_size=2),
    },
)
paths = st.sampled_from(
    [
        "input",
        "input.a",
        "input.b",
        "input.list",
        "input.list.0",
        "input.list.1",
        "input.list.01",
        "input.obj.x",
        "input.a.0",
        "output",
        "output.a",
        "error.code",
        "caller.worker_name",
        "metadata.tag",
        "metadata.n",
    ]
)
element_paths = st.sampled_from(["@", "@.x", "@.a", "@.0"])
bounds = st.integers(-3, 3) | st.sampled_from([0.5, "a", "b", ""])


def operator_objects(literal_paths: bool) -> st.SearchStrategy[dict[str, Any]]:
    simple = st.one_of(
        st.tuples(st.sampled_from(["$eq", "$ne"]), values),
        st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(values, max_size=3)),
        st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), bounds),
        st.tuples(st.just("$exists"), st.booleans()),
        st.tuples(st.just("$prefix"), st.sampled_from(["", "a", "é"])),
    )
    return st.lists(simple, min_size=1, max_size=2).map(dict)


def filters(in_any: bool = False, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    path = element_paths if in_any else paths
    clause = st.tuples(path, operator_objects(in_any)).map(lambda kv: {kv[0]: kv[1]})
    if depth < 2:
        nested = st.deferred(lambda: filters(in_any, depth + 1))
        any_clause = st.tuples(path, operator_objects(True) | filters(True, depth + 1)).map(
            lambda kv: {kv[0]: {"$any": kv[1]}}
        )
        clause = (
            clause
            | any_clause
            | st.lists(nested, min_size=1, max_size=2).map(lambda fs: {"$and": fs})
            | st.lists(nested, min_size=1, max_size=2).map(lambda fs: {"$or": fs})
            | nested.map(lambda f: {"$not": f})
        )
    return st.lists(clause, max_size=3).map(lambda cs: {k: v for c in cs for k, v in c.items()})


junk_keys = st.sampled_from(
    [
        "input.a",
        "@.x",
        "nope.a",
        "input..a",
        "input.a\\.b",
        "input\\q",
        "$and",
        "$or",
        "$not",
        "$eq",
        "$in",
        "$gt",
        "$exists",
        "$prefix",
        "$any",
        "$regex",
        "",
        "@",
    ]
)
junk = st.recursive(
    scalars | st.sampled_from([2**53, 2**53 + 1, -(2**53) - 1]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(junk_keys, inner, max_size=3),
    max_leaves=10,
)


def outcome(compile_: Any, error: type[Exception], source: Any, doc: dict[str, Any]) -> Any:
    try:
        compiled = compile_(source)
    except error:
        return "refused"
    return compiled.matches(doc)


# ---- properties --------------------------------------------------------------------------------

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(filters(), documents)
def test_the_evaluator_agrees_with_the_model(source: dict[str, Any], doc: dict[str, Any]) -> None:
    try:
        compiled = compile_filter(source)
    except FilterError:
        return  # over a limit (nodes, depth): the limits are tested below
    assert compiled.matches(doc) == model_matches(source, doc)


@FUZZ
@given(filters(), documents)
def test_the_evaluator_agrees_with_the_sdk(source: dict[str, Any], doc: dict[str, Any]) -> None:
    assert outcome(compile_filter, FilterError, source, doc) == outcome(
        sdk_compile, SdkFilterError, source, doc
    )


@FUZZ
@given(st.dictionaries(junk_keys, junk, max_size=3), documents)
def test_validation_agrees_with_the_sdk_on_arbitrary_json(
    source: dict[str, Any], doc: dict[str, Any]
) -> None:
    assert outcome(compile_filter, FilterError, source, doc) == outcome(
        sdk_compile, SdkFilterError, source, doc
    )


# ---- limits, at their boundaries -----------------------------------------------------------------


def nested_not(levels: int) -> dict[str, Any]:
    """A filter ``levels`` deep: ``$not`` around ``$not`` ... around one clause."""
    filters: dict[str, Any] = {"input.a": {"$eq": 1}}
    for _ in range(levels - 1):
        filters = {"$not": filters}
    return filters


def nested_any(levels: int) -> dict[str, Any]:
    """An operator object with ``levels`` ``$any`` inside each other (each one level deeper)."""
    operators: dict[str, Any] = {"$eq": 1}
    for _ in range(levels):
        operators = {"$any": operators}
    return operators


def nested_literal(levels: int) -> Any:
    literal: Any = 1
    for _ in range(levels):
        literal = [literal]
    return literal


@pytest.mark.parametrize(
    ("ok", "refused"),
    [
        (nested_not(8), nested_not(9)),
        (
            {f"input.k{i}": {"$eq": i} for i in range(64)},
            {f"input.k{i}": {"$eq": i} for i in range(65)},
        ),
        ({"input.a": {"$in": list(range(256))}}, {"input.a": {"$in": list(range(257))}}),
        (
            {"input." + ".".join("a" * 16): {"$exists": True}},
            {"input." + ".".join("a" * 17): {"$exists": True}},
        ),
        ({"input.a": {"$eq": 2**53}}, {"input.a": {"$eq": 2**53 + 1}}),
        ({"input.a": {"$eq": -(2**53)}}, {"input.a": {"$lt": -(2**53) - 1}}),
        ({"input.a": {"$eq": nested_literal(32)}}, {"input.a": {"$eq": nested_literal(33)}}),
        ({"input.a": nested_any(7)}, {"input.a": nested_any(8)}),
        ({"input.a": {"$any": {"@": {"$eq": 1}}}}, {"input.a": {"$any": {"@": 1}}}),
        ({"$and": [{"$and": [{"input.a": {"$eq": 1}}]}]}, {"$and": []}),
    ],
)
def test_limits_at_their_boundaries(ok: dict[str, Any], refused: dict[str, Any]) -> None:
    compile_filter(ok)
    sdk_compile(ok)
    with pytest.raises(FilterError) as error:
        compile_filter(refused)
    assert error.value.code == "INVALID_FILTER"
    with pytest.raises(SdkFilterError):
        sdk_compile(refused)


def test_the_encoded_size_limit_counts_utf8_bytes() -> None:
    head = len('{"input.a":{"$eq":""}}')
    compile_filter({"input.a": {"$eq": "x" * (8192 - head)}})
    with pytest.raises(FilterError):
        compile_filter({"input.a": {"$eq": "x" * (8193 - head)}})
    with pytest.raises(FilterError):  # é is two bytes
        compile_filter({"input.a": {"$eq": "é" * ((8192 - head) // 2 + 1)}})


def test_semantics_worth_spelling_out() -> None:
    doc = {"input": {"n": 1, "none": None, "flag": True, "items": [{"sku": "a"}, {"sku": "b"}]}}
    assert compile_filter({"input.n": {"$eq": 1.0}}).matches(doc)  # numbers as doubles
    assert not compile_filter({"input.flag": {"$eq": 1}}).matches(doc)  # a boolean is no number
    assert compile_filter({"input.none": {"$exists": True}}).matches(doc)  # null is a value
    assert compile_filter({"input.gone": {"$ne": 1}}).matches(doc)  # absent passes $ne
    assert not compile_filter({"input.gone": {"$in": [None]}}).matches(doc)
    assert compile_filter({"input.items.1.sku": {"$eq": "b"}}).matches(doc)
    assert compile_filter({"input.items": {"$any": {"@.sku": {"$prefix": "b"}}}}).matches(doc)
    assert not compile_filter({"input.items": {"$any": {"@.sku": {"$eq": "c"}}}}).matches(doc)
    assert compile_filter({"input.items": {"$any": {}}}).matches(doc)  # any element at all
    assert compile_filter({}).matches({})
    assert compile_filter({"input.a\\.b": {"$eq": 1}}).matches({"input": {"a.b": 1}})


def test_a_match_gives_up_after_200k_array_elements() -> None:
    """evstate's guard (not the SDK's): nested ``$any`` multiplies; the loop must not stall."""
    grid = {"input": {"a": [[0] * 1000 for _ in range(1000)]}}
    started = time.monotonic()
    assert not compile_filter({"input.a": {"$any": {"$any": {"$eq": 1}}}}).matches(grid)
    assert time.monotonic() - started < 5
    assert compile_filter({"input.a": {"$any": {"$any": {"$eq": 0}}}}).matches(grid)
    small = {"input": {"a": [[0] * 100 for _ in range(1000)] + [[1]]}}
    assert compile_filter({"input.a": {"$any": {"$any": {"$eq": 1}}}}).matches(small)
