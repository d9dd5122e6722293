"""The redis adapter's data layout: iii compatibility, the atomic event stream, dedup, errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis

import evstate
from evstate import UpdateOp
from evstate.backends.redis.client import BackendUnavailableError
from evstate.backends.redis.store import RedisStore, open_redis
from evstate.config import load_config
from tests.redis.server import RedisServer

Open = Callable[..., RedisStore]


def raw(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def test_state_is_in_the_iii_layout(open_store: Open, redis_url: str) -> None:
    store = open_store()
    store.set("users", "u1", {"name": "Zoë", "n": [1, 2.5, True, None]})
    store.set("orders", "o:1", "text")
    r = raw(redis_url)
    assert r.type("state:users") == b"hash"
    assert r.hgetall("state:users") == {
        b"u1": '{"name":"Zoë","n":[1,2.5,true,null]}'.encode()  # compact, UTF-8
    }
    assert r.hget("state:orders", "o:1") == b'"text"'
    store.delete("orders", "o:1")
    assert not r.exists("state:orders")  # an empty scope has no hash: list_groups drops it


def test_values_written_by_iii_are_read_and_updated(open_store: Open, redis_url: str) -> None:
    r = raw(redis_url)
    store = open_store()
    r.hset("state:users", "u9", '{"name": "Iris", "logins": 4}')  # an iii engine writing
    assert store.get("users", "u9") == {"name": "Iris", "logins": 4}
    assert store.list_groups() == {"groups": ["users"]}
    result = store.update("users", "u9", [UpdateOp.increment("logins", 1)])
    assert result["old_value"] == {"name": "Iris", "logins": 4}
    assert json.loads(r.hget("state:users", "u9") or b"") == {"name": "Iris", "logins": 5}
    assert store.history("users", "u9")[0].old_value == {"name": "Iris", "logins": 4}
    assert store.verify() == []  # the update logged iii's value as its old value
    r.hset("state:users", "u8", "1")  # a write that bypasses the log
    assert store.verify() == ["the live state differs from a replay of the log"]
    r.hdel("state:users", "u8")
    r.hset("state:users", "bad", "not json")
    with pytest.raises(evstate.CorruptionError):
        store.get("users", "bad")


def test_existing_iii_state_is_adopted_as_snapshot_zero(redis_url: str) -> None:
    r = raw(redis_url)
    r.hset("state:users", mapping={"a": "1", "b": '{"x":true}'})
    r.hset("state:cfg", "theme", '"dark"')
    r.set("state:not-a-hash", "ignored")
    with open_redis(redis_url) as store:
        assert store.list_groups() == {"groups": ["cfg", "users"]}
        assert store.revision == 0
        assert store.at(0).list("users") == {"a": 1, "b": {"x": True}}
        store.set("users", "a", 2)
        assert store.at(0).get("users", "a") == 1
        assert store.history("users", "a")[0].old_value == 1
        assert store.verify() == []
    with open_redis(redis_url) as store:  # adoption happens once
        assert store.stats()["snapshots"] == 1


def test_every_write_is_one_stream_entry_with_its_revision(
    open_store: Open, redis_url: str
) -> None:
    store = open_store()
    store.set("s", "k", {"v": 1})
    store.update("s", "k", [UpdateOp.increment("v", 1)])
    store.delete("s", "k")
    store.delete("s", "missing")
    entries = raw(redis_url).xrange("evstate:log")
    assert [e[0] for e in entries] == [b"1-0", b"2-0", b"3-0", b"4-0"]
    fields = [e[1] for e in entries]
    assert [f[b"type"] for f in fields] == [b"created", b"updated", b"deleted", b"deleted"]
    assert fields[0][b"new"] == b'{"v":1}' and b"old" not in fields[0]
    assert (fields[1][b"old"], fields[1][b"new"]) == (b'{"v":1}', b'{"v":2}')
    assert fields[2][b"old"] == b'{"v":2}' and b"new" not in fields[2]
    assert b"old" not in fields[3] and b"new" not in fields[3]
    assert {f[b"scope"] for f in fields} == {b"s"}
    stamps = [int(f[b"ts"]) for f in fields]
    assert stamps == sorted(stamps)
    assert raw(redis_url).hget("evstate:meta", "revision") == b"4"


def test_no_reader_sees_state_without_its_event(open_store: Open, redis_url: str) -> None:
    """Readers using MULTI see the hash, the revision and the stream move together."""
    stores = [open_store(), open_store()]
    stop = threading.Event()
    problems: list[str] = []

    def writer(store: RedisStore, offset: int) -> None:
        for i in range(300):
            store.set("s", "k", offset + i)

    def reader() -> None:
        r = raw(redis_url)
        while not stop.is_set():
            pipe = r.pipeline(transaction=True)
            pipe.hget("state:s", "k")
            pipe.hget("evstate:meta", "revision")
            pipe.xrevrange("evstate:log", count=1)
            value, revision, last = pipe.execute()
            if not last:
                continue
            entry_id, fields = last[0]
            if entry_id != f"{int(revision)}-0".encode() or fields[b"new"] != value:
                problems.append(f"revision {revision!r}, entry {entry_id!r}, value {value!r}")

    threads = [threading.Thread(target=reader)]
    threads += [threading.Thread(target=writer, args=(s, n * 1000)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    stop.set()
    threads[0].join()
    assert problems == []
    assert stores[0].revision == 600
    assert stores[0].verify() == []


def test_a_retried_write_is_applied_once(
    open_store: Open, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store()
    monkeypatch.setattr("evstate.backends.redis.writes.new_request_id", lambda: "same-request")
    assert store.set("s", "k", 1) == {"old_value": None, "new_value": 1}
    store.set("s", "k", 2)  # the same request id again: recognised, not applied
    assert store.get("s", "k") == 1
    assert store.revision == 1
    assert raw(redis_url).xlen("evstate:log") == 1


def test_a_failing_script_writes_nothing(open_store: Open, redis_url: str) -> None:
    store = open_store()
    store.set("ok", "k", 1)
    raw(redis_url).set("state:broken", "a string, not a hash")
    with pytest.raises(evstate.StorageError) as info:
        store.set("broken", "k", 1)
    assert "WRONGTYPE" in str(info.value)
    assert not isinstance(info.value, BackendUnavailableError)
    assert store.revision == 1
    assert raw(redis_url).xlen("evstate:log") == 1
    assert store.verify() == []


def test_unreachable_redis_is_a_clear_error(tmp_path: Any) -> None:
    server = RedisServer(tmp_path)  # not started: nothing listens on its port
    with pytest.raises(BackendUnavailableError) as info:
        open_redis(server.url)
    assert isinstance(info.value, evstate.StorageError)
    assert info.value.code == "backend_unavailable"
    assert f"127.0.0.1:{server.port}" in str(info.value)


def test_passwords_are_not_shown(tmp_path: Any) -> None:
    server = RedisServer(tmp_path)
    url = f"redis://user:s3cret@127.0.0.1:{server.port}/0"
    with pytest.raises(BackendUnavailableError) as info:
        open_redis(url)
    assert "s3cret" not in str(info.value)


def test_open_from_a_config_file(tmp_path: Any, redis_url: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "workers:\n  - name: iii-state\n    config:\n      max_value_bytes: 100\n"
        "      adapter:\n        name: redis\n        config:\n"
        "          redis_url: ${REDIS_URL}\n"
    )
    config = load_config(path, env={"REDIS_URL": redis_url})
    with RedisStore(config) as store:
        assert store.url == redis_url
        store.set("s", "k", 1)
        with pytest.raises(evstate.ValueTooLargeError):
            store.set("s", "k", "x" * 200)
    with pytest.raises(evstate.ConfigError):
        RedisStore(
            load_config(path, env={"REDIS_URL": redis_url})
            .replace(store_method="in_memory")
            .__class__()
        )


def test_layout_version_is_checked(redis_url: str) -> None:
    raw(redis_url).hset("evstate:meta", mapping={"format": "99", "revision": 0})
    with pytest.raises(evstate.StorageError, match="layout version 99"):
        open_redis(redis_url)


def test_evstate_open_returns_a_redis_store(
    redis_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a file store would appear in ./data if open() ignored redis
    config = evstate.Config(adapter="redis", redis_url=redis_url)
    with evstate.open(config=config, max_value_bytes=10) as store:
        assert isinstance(store, RedisStore)
        store.set("s", "k", 1)
        assert raw(redis_url).hget("state:s", "k") == b"1"
    assert not (tmp_path / "data").exists()


def test_compaction_drops_unfinished_snapshots(open_store: Open, redis_url: str) -> None:
    store = open_store(retention={"revisions": 2})
    for i in range(10):
        store.set("s", "k", i)
    r = raw(redis_url)
    r.set("evstate:snapchunk:7:0", "[]")  # a process died while writing snapshot 7
    result = store.compact()
    assert (result["base"], result["horizon_revision"]) == (8, 8)
    assert not r.exists("evstate:snapchunk:7:0")
    assert r.exists("evstate:snapchunk:8:0")
    assert store.verify() == []
