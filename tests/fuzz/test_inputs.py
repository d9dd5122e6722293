"""Fuzzing the input surfaces: config.yaml text and blocks, update ops, call() payloads.

Promises: only the documented ``evstate.Error`` subclasses are raised (``ConfigError`` for a
config; ``InvalidRequestError`` and its subclasses for ops and payloads,
``FunctionNotFoundError`` for an unknown function id); nothing hangs; a rejected input
changes nothing (same revision, same state); an accepted update does exactly what the
model (``apply_update_ops``) says. Server frames are not fuzzed here (the server is being
built separately; its frames get their own fuzz tests).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import hypothesis.strategies as st
import pytest
import yaml
from hypothesis import given

import evstate
from evstate.config import Config, parse_config_text, validate_config
from evstate.core.functions import FUNCTION_IDS, call_function
from evstate.ops import parse_ops
from evstate.ops_apply import apply_update_ops
from evstate.values import validate_value
from tests.fuzz.fuzzlib import fuzz_settings, no_hang

# ---- config.yaml ------------------------------------------------------------------------

CONFIG_WORDS = [
    "workers",
    "modules",
    "name",
    "class",
    "config",
    "adapter",
    "iii-state",
    "iii-worker-manager",
    "modules::state::StateModule",
    "kv",
    "redis",
    "bridge",
    "store_method",
    "file_based",
    "in_memory",
    "file_path",
    "fsync",
    "always",
    "never",
    "interval",
    "fsync_interval_ms",
    "segment_size_bytes",
    "save_interval_ms",
    "max_value_bytes",
    "retention",
    "revisions",
    "duration",
    "forever",
    "7d",
    "triggers_enabled",
    "registration_namespace_grace_ms",
    "redis_url",
    "kv_server",
]
config_scalars = (
    st.sampled_from(CONFIG_WORDS)
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.booleans()
    | st.none()
    | st.text(max_size=8)
)
config_trees = st.recursive(
    config_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(CONFIG_WORDS) | st.text(max_size=4) | st.integers(), inner, max_size=5
        )
    ),
    max_leaves=25,
)
example_config = """
workers:
  - name: iii-state
    config:
      adapter:
        name: kv
        config:
          store_method: ${STORE:file_based}
          file_path: ./data
          save_interval_ms: 5000
"""


def _text_edits(text: str) -> st.SearchStrategy[str]:
    """``text`` with a slice replaced by random text (YAML-level mutations)."""
    return st.tuples(st.integers(0, len(text)), st.integers(0, 20), st.text(max_size=12)).map(
        lambda e: text[: e[0]] + e[2] + text[e[0] + e[1] :]
    )


def _dump(tree: Any) -> str:
    try:
        return str(yaml.safe_dump(tree))
    except (yaml.YAMLError, ValueError, TypeError):
        return ""


def _parse_and_validate(text: str, env: dict[str, str]) -> None:
    with no_hang():
        try:
            raw = parse_config_text(text, env=env)
        except evstate.ConfigError as exc:
            assert exc.problems and all(isinstance(p, str) for p in exc.problems)
            return
        assert isinstance(raw, dict)
        try:
            config = validate_config(raw)
        except evstate.ConfigError as exc:
            assert exc.problems
            return
    assert isinstance(config, Config)


@fuzz_settings()
@given(
    st.one_of(
        st.text(max_size=300),
        config_trees.map(_dump),
        _text_edits(example_config),
        config_trees.map(_dump).flatmap(_text_edits),
    ),
    st.dictionaries(st.sampled_from(["STORE", "X", "HOME"]), st.text(max_size=10), max_size=2),
)
def test_config_text_yields_a_config_or_a_config_error(text: str, env: dict[str, str]) -> None:
    _parse_and_validate(text, env)


@fuzz_settings()
@given(config_trees)
def test_config_blocks_yield_a_config_or_a_config_error(tree: Any) -> None:
    for raw in (tree, {"workers": [{"name": "iii-state", "config": tree}]}, {"modules": tree}):
        with no_hang():
            try:
                config = validate_config(raw)
            except evstate.ConfigError as exc:
                assert exc.problems
                continue
        assert isinstance(config, Config)


def test_deeply_nested_yaml_is_a_config_error() -> None:
    with pytest.raises(evstate.ConfigError):
        parse_config_text("a: " + "[" * 1000 + "]" * 1000, env={})


# ---- update ops and call() ----------------------------------------------------------------

json_leaves = (
    st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats() | st.text(max_size=6)
)
json_trees = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=16,
)
odd_objects = st.sampled_from([b"bytes", (1, 2), {1, 2}, object(), float("nan"), 10**30])
paths = st.one_of(
    st.sampled_from(["", "n", "a", "__proto__", "a.b", "x" * 300]),
    st.lists(st.sampled_from(["", "n", "a", "constructor"]), max_size=40),
    json_leaves,
)
op_dicts = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["set", "merge", "increment", "decrement", "append", "remove", "x"])
        | json_leaves
    },
    optional={
        "path": paths,
        "value": json_trees | odd_objects,
        "by": json_leaves | odd_objects,
        "extra": json_trees,
    },
)
raw_ops = st.one_of(
    st.lists(op_dicts, max_size=5), json_trees, odd_objects, st.lists(json_trees, max_size=3)
)


@fuzz_settings()
@given(raw_ops, json_trees, st.booleans())
def test_ops_parse_or_fail_cleanly_and_apply_never_raises(
    ops: Any, current: Any, missing: bool
) -> None:
    with no_hang():
        try:
            parsed = parse_ops(ops)
        except evstate.InvalidRequestError:
            return
        try:
            validate_value(current)
        except evstate.InvalidValueError:
            current = {}
        value, errors = apply_update_ops(copy.deepcopy(current), parsed, missing=missing)
    validate_value(value)  # the result is always storable JSON data
    assert all(set(e) == {"op_index", "code", "message", "doc_url"} for e in errors)


@pytest.fixture(scope="module", params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[evstate.Store]:
    if request.param == "memory":
        opened = evstate.open(max_value_bytes=4096)
    else:
        opened = evstate.open(
            tmp_path_factory.mktemp("inputs"), fsync="never", max_value_bytes=4096
        )
    opened.set("s", "k", {"n": 1, "a": [1], "o": {"x": 1}})
    yield opened
    opened.close()


def _snapshot(store: evstate.Store) -> tuple[int, dict[str, Any]]:
    groups = store.list_groups()["groups"]
    return store.revision, {scope: store.list(scope) for scope in groups}


@fuzz_settings(0.5)
@given(st.sampled_from(["s", "t"]), st.sampled_from(["k", "new"]), raw_ops)
def test_store_update_applies_the_model_or_changes_nothing(
    store: evstate.Store, scope: str, key: str, ops: Any
) -> None:
    before = _snapshot(store)
    current = store.get(scope, key)
    missing = key not in store.list(scope)
    with no_hang():
        try:
            result = store.update(scope, key, ops)
        except evstate.InvalidRequestError:
            assert _snapshot(store) == before, "a rejected update changed the store"
            return
    expected, errors = apply_update_ops(
        {} if missing else copy.deepcopy(current), parse_ops(ops), missing=missing
    )
    assert result["new_value"] == expected and result.get("errors", []) == errors
    assert store.get(scope, key) == expected and store.revision == before[0] + 1


payload_fields = st.sampled_from(["scope", "key", "value", "data", "ops", "x"])
payloads = st.one_of(
    st.dictionaries(payload_fields, json_trees | odd_objects | raw_ops, max_size=5),
    st.fixed_dictionaries(
        {
            "scope": st.sampled_from(["s", "t"]) | json_leaves,
            "key": st.sampled_from(["k", "q"]) | json_leaves,
        },
        optional={"value": json_trees | odd_objects, "data": json_trees, "ops": raw_ops},
    ),
    json_trees,
    odd_objects,
)
function_ids = (
    st.sampled_from(FUNCTION_IDS) | st.sampled_from(["state::nope", "", "state."]) | json_leaves
)


@fuzz_settings(0.5)
@given(function_ids, payloads)
def test_call_raises_only_documented_errors_and_rejections_change_nothing(
    store: evstate.Store, function_id: Any, payload: Any
) -> None:
    before = _snapshot(store)
    with no_hang():
        try:
            result = call_function(store, function_id, payload)
        except evstate.Error as exc:
            assert isinstance(exc, evstate.FunctionNotFoundError | evstate.InvalidRequestError), (
                f"undocumented {type(exc).__name__}: {exc}"
            )
            assert exc.code and exc.message
            assert _snapshot(store) == before, "a rejected call changed the store"
            return
    revision = store.revision
    writes = ("set", "delete", "update")
    if isinstance(function_id, str) and function_id.rsplit(":", 1)[-1].rsplit(".", 1)[-1] in writes:
        assert revision == before[0] + 1
    else:
        assert (revision, _snapshot(store)[1]) == before, "a read changed the store"
    del result
