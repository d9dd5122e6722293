"""The embedded Store API: what is specific to file and in-memory stores.

The API cases every store kind must pass (memory, file, redis) are in tests/conformance/.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import evstate
from evstate import UpdateOp

USER = {"name": "Alice", "email": "alice@example.com"}


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
