"""The embedded Store API, for in-memory and file stores alike."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import evstate
from evstate import UpdateOp

USER = {"name": "Alice", "email": "alice@example.com"}


def test_set_returns_old_and_new(store: evstate.Store) -> None:
    assert store.set("users", "u1", USER) == {"old_value": None, "new_value": USER}
    assert store.set("users", "u1", {"name": "A2"}) == {
        "old_value": USER,
        "new_value": {"name": "A2"},
    }


def test_get_missing_is_none(store: evstate.Store) -> None:
    assert store.get("users", "nobody") is None
    assert store.get("nowhere", "nobody") is None


def test_stored_null_exists(store: evstate.Store) -> None:
    store.set("s", "k", None)
    assert store.get("s", "k") is None
    assert store.list("s") == {"k": None}
    assert store.set("s", "k", 1) == {"old_value": None, "new_value": 1}


def test_delete_returns_deleted_value(store: evstate.Store) -> None:
    store.set("users", "u1", USER)
    assert store.delete("users", "u1") == USER
    assert store.get("users", "u1") is None
    assert store.delete("users", "u1") is None


def test_delete_of_missing_key_still_records_an_event(store: evstate.Store) -> None:
    before = store.revision
    assert store.delete("s", "missing") is None
    assert store.revision == before + 1


def test_revisions_are_gap_free(store: evstate.Store) -> None:
    store.set("s", "a", 1)
    store.update("s", "a", [UpdateOp.increment("x", 1)])
    store.delete("s", "a")
    assert store.revision == 3


def test_update_applies_ops_and_creates_missing_key(store: evstate.Store) -> None:
    result = store.update(
        "users",
        "u1",
        [UpdateOp.set("status", "active"), UpdateOp.increment("loginCount", 1)],
    )
    assert result == {"old_value": None, "new_value": {"status": "active", "loginCount": 1}}
    result = store.update("users", "u1", [{"type": "increment", "path": "loginCount", "by": 2}])
    assert result["new_value"]["loginCount"] == 3
    assert "errors" not in result


def test_update_reports_failed_ops_and_keeps_the_rest(store: evstate.Store) -> None:
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


def test_update_with_malformed_ops_writes_nothing(store: evstate.Store) -> None:
    store.set("s", "k", {"n": 1})
    revision = store.revision
    with pytest.raises(evstate.InvalidRequestError) as info:
        store.update("s", "k", [{"type": "increment", "path": "n", "by": 1.5}])
    assert info.value.code == "deserialization_error"
    with pytest.raises(evstate.InvalidRequestError):
        store.update("s", "k", [{"type": "multiply", "path": "n"}])
    assert store.revision == revision
    assert store.get("s", "k") == {"n": 1}


def test_list_is_sorted_mapping(store: evstate.Store) -> None:
    for key in ["b", "a", "c"]:
        store.set("s", key, key.upper())
    assert list(store.list("s").items()) == [("a", "A"), ("b", "B"), ("c", "C")]
    assert store.list("empty") == {}


def test_list_values_keep_insertion_order(store: evstate.Store) -> None:
    for key in ["b", "a", "c"]:
        store.set("s", key, key)
    store.set("s", "b", "B")  # an overwrite keeps its place
    assert store.list_values("s") == ["B", "a", "c"]


def test_list_groups_sorted_and_only_non_empty(store: evstate.Store) -> None:
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
    ],
)
def test_bad_values_rejected_with_nothing_written(
    store: evstate.Store, value: object, path: str
) -> None:
    store.set("s", "k", "before")
    revision = store.revision
    with pytest.raises(evstate.InvalidValueError) as info:
        store.set("s", "k", value)
    assert isinstance(info.value, ValueError)
    assert info.value.path.startswith(path)
    assert path in str(info.value)
    assert store.get("s", "k") == "before"
    assert store.revision == revision
    store.set("s", "k", "after")  # still usable
    assert store.get("s", "k") == "after"


@pytest.mark.parametrize(("scope", "key"), [(1, "k"), ("s", None), (b"s", "k"), ("s", ("k",))])
def test_scope_and_key_must_be_str(store: evstate.Store, scope: object, key: object) -> None:
    for call in (
        lambda: store.set(scope, key, 1),  # type: ignore[arg-type]
        lambda: store.get(scope, key),  # type: ignore[arg-type]
        lambda: store.delete(scope, key),  # type: ignore[arg-type]
        lambda: store.update(scope, key, []),  # type: ignore[arg-type]
    ):
        with pytest.raises(evstate.InvalidRequestError):
            call()
    assert store.revision == 0


def test_empty_scope_and_key_are_allowed(store: evstate.Store) -> None:
    store.set("", "", {"x": 1})
    assert store.get("", "") == {"x": 1}
    assert store.list_groups() == {"groups": [""]}


def test_values_are_isolated(store: evstate.Store) -> None:
    value = {"tags": ["a"], "nested": {"n": 1}}
    result = store.set("s", "k", value)
    value["tags"].append("mutated")
    result["new_value"]["nested"]["n"] = 99
    got = store.get("s", "k")
    got["tags"].append("again")
    store.list("s")["k"]["nested"]["n"] = 7
    assert store.get("s", "k") == {"tags": ["a"], "nested": {"n": 1}}
    ops = [UpdateOp.set("obj", {"deep": [1]})]
    raw_ops = [op.to_dict() for op in ops]
    store.update("s", "k", raw_ops)
    raw_ops[0]["value"]["deep"].append(2)
    assert store.get("s", "k")["obj"] == {"deep": [1]}


def test_max_value_bytes(make_store: Callable[..., evstate.Store]) -> None:
    store = make_store(max_value_bytes=20)
    store.set("s", "small", "x" * 10)
    with pytest.raises(evstate.ValueTooLargeError) as info:
        store.set("s", "big", "x" * 30)
    assert info.value.code == "VALUE_TOO_LARGE"
    assert str(info.value) == (
        "value of 32 bytes exceeds the configured max_value_bytes limit of 20"
    )
    assert store.get("s", "big") is None


def test_closed_store_refuses_calls(store: evstate.Store) -> None:
    store.set("s", "k", 1)
    store.close()
    store.close()  # idempotent
    with pytest.raises(evstate.StoreClosedError):
        store.get("s", "k")
    with pytest.raises(evstate.StoreClosedError):
        store.set("s", "k", 2)


def test_context_manager_closes(make_store: Callable[..., evstate.Store]) -> None:
    with make_store() as store:
        store.set("s", "k", 1)
    assert store.closed


def test_eight_threads_increment_exactly(store: evstate.Store) -> None:
    def work() -> None:
        for _ in range(10_000):
            store.update("counters", "c", [UpdateOp.increment("n", 1)])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("counters", "c") == {"n": 80_000}
    assert store.revision == 80_000


def test_reads_during_writes_never_fail(make_store: Callable[..., evstate.Store]) -> None:
    # fsync=never: a spinning reader holds the GIL through each fsync wait, which only
    # makes the test slow; the point here is concurrent reads of changing dicts.
    store = make_store(fsync="never")
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
    for i in range(3000):
        store.set("s", f"k{i % 50}", i)
        if i % 7 == 0:
            store.delete("s", f"k{i % 50}")
        store.set(f"scope{i % 20}", "k", i)
        store.delete(f"scope{i % 20}", "k")
    stop.set()
    t.join()
    assert errors == []


def test_file_store_survives_reopen(tmp_path: Path) -> None:
    with evstate.open(tmp_path / "d") as store:
        store.set("users", "u1", USER)
        store.update("users", "u1", [UpdateOp.increment("logins", 1)])
        store.set("users", "u2", [1, 2.5, True, None, "s"])
        store.delete("users", "u2")
        store.delete("users", "never")
    with evstate.open(tmp_path / "d") as store:
        assert store.revision == 5
        assert store.list("users") == {"u1": {**USER, "logins": 1}}


def test_second_open_is_locked(tmp_path: Path) -> None:
    with evstate.open(tmp_path) as store:
        store.set("s", "k", 1)
        with pytest.raises(evstate.StoreLockedError):
            evstate.open(tmp_path)
        store.set("s", "k", 2)  # the owner is unharmed
    with evstate.open(tmp_path) as store:
        assert store.get("s", "k") == 2


def test_in_memory_store_is_empty_each_time() -> None:
    with evstate.open() as store:
        store.set("s", "k", 1)
    with evstate.open() as store:
        assert store.get("s", "k") is None
        assert store.path is None


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
def test_every_fsync_mode_persists_on_close(tmp_path: Path, fsync: str) -> None:
    with evstate.open(tmp_path, fsync=fsync, fsync_interval_ms=5) as store:
        for i in range(50):
            store.set("s", str(i), i)
        store.flush()
        store.set("s", "last", True)
    with evstate.open(tmp_path) as store:
        assert len(store.list("s")) == 51


def test_bad_option_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(evstate.ConfigError):
        evstate.open(tmp_path, fsync="sometimes")
    with pytest.raises(evstate.ConfigError):
        evstate.open(tmp_path, no_such_option=1)


def test_open_from_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    data = tmp_path / "state"
    cfg.write_text(
        "workers:\n"
        "  - name: iii-state\n"
        "    config:\n"
        "      max_value_bytes: 100\n"
        "      adapter:\n"
        "        name: kv\n"
        "        config:\n"
        f"          store_method: file_based\n"
        f"          file_path: {data}\n"
    )
    with evstate.open(config=cfg) as store:
        assert store.path == str(data)
        store.set("s", "k", 1)
        with pytest.raises(evstate.ValueTooLargeError):
            store.set("s", "k", "x" * 200)
    with evstate.open(config=str(cfg)) as store:
        assert store.get("s", "k") == 1


def test_write_survives_a_failed_write_attempt(store: evstate.Store) -> None:
    store.set("s", "k", {"a": 1})
    with pytest.raises(evstate.InvalidValueError):
        store.update("s", "k", [{"type": "set", "path": "x", "value": {1, 2}}])
    assert store.get("s", "k") == {"a": 1}
