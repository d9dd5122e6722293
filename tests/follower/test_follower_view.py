"""A follower is a live, read-only view of a directory another Store owns."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import evstate
from evstate import Follower, follow
from evstate.backends.file.segment import frame_record, read_header
from evstate.errors import CorruptionError, HistoryCompactedError, StorageError
from evstate.events import CREATED, EventRecord, encode_record

SMALL = {"segment_size_bytes": 4096, "save_interval_ms": 3_600_000}


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[evstate.Store]:
    store = evstate.open(tmp_path / "store", **SMALL)  # type: ignore[arg-type]
    yield store
    store.close()


def same_state(follower: Follower, store: evstate.Store) -> bool:
    groups = store.list_groups()
    return follower.list_groups() == groups and all(
        follower.list(scope) == store.list(scope) for scope in groups["groups"]
    )


def file_state(directory: Path) -> dict[str, tuple[int, int]]:
    """Name -> (size, mtime_ns) of every file the owner has (not the followers/ directory)."""
    return {
        p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir() if p.is_file()
    }


def test_reads_mirror_the_owner(owner: evstate.Store) -> None:
    owner.set("users", "u1", {"name": "Ada", "tags": ["a"]})
    owner.set("config", "theme", "dark")
    with follow(owner.path) as follower:  # type: ignore[arg-type]
        assert follower.get("users", "u1") == {"name": "Ada", "tags": ["a"]}
        owner.update("users", "u1", [evstate.UpdateOp.increment("logins", 1)])
        owner.delete("config", "theme")
        owner.set("users", "u0", 1)
        assert follower.wait_for(owner.revision, timeout=5)
        assert follower.revision == owner.revision
        assert same_state(follower, owner)
        assert follower.list_values("users") == owner.list_values("users")
        assert follower.get("config", "theme") is None
        value = follower.get("users", "u1")
        value["name"] = "mutated"
        assert follower.get("users", "u1")["name"] == "Ada"


def test_missing_directory_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no store directory"):
        follow(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


def test_empty_directory_then_an_owner_starts(tmp_path: Path) -> None:
    with follow(tmp_path) as follower:
        assert follower.revision == 0 and follower.list_groups() == {"groups": []}
        with evstate.open(tmp_path) as store:
            store.set("s", "k", 1)
            assert follower.wait_for(1, timeout=5)
            assert follower.get("s", "k") == 1


def test_follower_takes_no_lock_and_writes_nothing(owner: evstate.Store) -> None:
    for i in range(50):
        owner.set("s", f"k{i}", i)
    owner.snapshot()
    owner.close()
    directory = Path(owner.path)  # type: ignore[arg-type]
    before = file_state(directory)
    with follow(directory) as follower:
        follower.history("s", "k1")
        follower.at(revision=10)
        follower.stats()
        assert follower.verify() == []
        assert list(follower.tail(idle_timeout=0.1)) == []
        assert file_state(directory) == before
        assert not (directory / "followers").exists()
        with evstate.open(directory) as again:  # the writer lock is free
            assert again.get("s", "k3") == 3


def test_survives_rolls_snapshots_and_compaction(tmp_path: Path) -> None:
    path = tmp_path / "store"
    store = evstate.open(path, retention={"revisions": 30}, **SMALL)  # type: ignore[arg-type]
    try:
        with follow(path) as follower:
            for i in range(300):
                store.set("s", f"k{i % 17}", {"i": i, "pad": "x" * 40})
                if i % 60 == 59:
                    store.snapshot()
                    store.compact()
                    assert follower.wait_for(store.revision, timeout=5)
                    assert same_state(follower, store)
            assert follower.wait_for(store.revision, timeout=5)
            assert same_state(follower, store)
            assert len(list(path.glob("*.log"))) < 10  # segments really were deleted
    finally:
        store.close()


def test_a_position_compacted_away_reloads_from_the_newest_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "store"
    store = evstate.open(path, retention={"revisions": 10}, **SMALL)  # type: ignore[arg-type]
    try:
        store.set("s", "start", 0)
        follower = follow(path, live=False)  # reads only when asked
        for i in range(400):
            store.set("s", f"k{i % 23}", {"i": i, "pad": "y" * 40})
            if i in (300, 399):
                store.snapshot()
        store.compact()
        assert Path(path / "00000000000000000001.log").exists() is False
        assert follower.refresh() == store.revision
        assert same_state(follower, store)
        with pytest.raises(HistoryCompactedError):
            list(follower.tail(start=2, idle_timeout=0.1))
        follower.close()
    finally:
        store.close()


def test_history_at_events_and_stats_answer_like_the_store(owner: evstate.Store) -> None:
    for i in range(40):
        owner.set("users", f"u{i % 5}", {"n": i})
    owner.snapshot()
    for i in range(40, 60):
        owner.update("users", f"u{i % 5}", [{"type": "increment", "path": "n", "by": 1}])
    owner.delete("users", "u0")
    with follow(owner.path) as follower:  # type: ignore[arg-type]
        assert follower.history("users", "u1") == owner.history("users", "u1")
        assert follower.history("users", "u1", since=10, until=50, limit=3) == owner.history(
            "users", "u1", since=10, until=50, limit=3
        )
        for revision in (0, 1, 25, 40, 41, 55, owner.revision, owner.revision + 5):
            mine, theirs = follower.at(revision=revision), owner.at(revision=revision)
            assert mine.revision == theirs.revision
            assert mine.timestamp == theirs.timestamp
            assert mine.list("users") == theirs.list("users")
        when = owner.history("users", "u2")[3].timestamp / 1000
        assert follower.at(time=when).list("users") == owner.at(time=when).list("users")
        assert list(follower.events(5, 30, scope="users", key="u3")) == list(
            owner.events(5, 30, scope="users", key="u3")
        )
        mine_stats, theirs_stats = follower.stats(), owner.stats()
        for name in ("revision", "keys", "scopes", "segments", "snapshots", "oldest_revision"):
            assert mine_stats[name] == theirs_stats[name], name
        assert mine_stats["owner_pid"] == os.getpid()


def test_a_partial_record_is_invisible_until_complete(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with evstate.open(path) as store:
        store.set("s", "a", 1)
    segment = next(path.glob("*.log"))
    salt = read_header(segment.read_bytes())[1]
    record = EventRecord(2, 1, CREATED, "s", "b", None, b"\x02")
    frame = frame_record(encode_record(record), salt)
    with follow(path, live=False) as follower:
        with open(segment, "ab") as f:
            f.write(frame[:5])  # not even a whole frame header
        assert follower.refresh() == 1
        with open(segment, "ab") as f:
            f.write(frame[5:-3])  # the length is known, the payload is short
        assert follower.refresh() == 1
        size = segment.stat().st_size
        with open(segment, "ab") as f:
            f.write(frame[-3:])
        assert follower.refresh() == 2
        assert follower.get("s", "b") == 2
        assert segment.stat().st_size == size + 3  # nothing was truncated meanwhile


def test_an_owner_restart_after_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with evstate.open(path) as store:
        store.set("s", "a", 1)
    segment = next(path.glob("*.log"))
    with open(segment, "ab") as f:
        f.write(b"\x20\x00\x00\x00garbage")  # what a crash mid-write leaves
    with follow(path) as follower:
        assert follower.revision == 1
        with evstate.open(path) as store:  # recovery cuts the tail, then appends
            store.set("s", "b", 2)
            assert follower.wait_for(2, timeout=5)
            assert follower.get("s", "b") == 2 and follower.problem is None


def test_corruption_is_reported_not_skipped(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with evstate.open(path) as store:
        for i in range(5):
            store.set("s", f"k{i}", "v" * 20)
    segment = next(path.glob("*.log"))
    data = bytearray(segment.read_bytes())
    data[40] ^= 0xFF  # inside the first record: valid ones follow
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptionError):
        follow(path)


def test_tail_yields_new_events_in_order(owner: evstate.Store) -> None:
    owner.set("s", "before", 0)
    got: list[tuple[int, str]] = []
    with follow(owner.path) as follower:  # type: ignore[arg-type]

        def consume() -> None:
            for event in follower.tail(scope="s", idle_timeout=2):
                got.append((event.revision, event.key))
                if len(got) == 3:
                    return

        reader = threading.Thread(target=consume)
        reader.start()
        time.sleep(0.05)
        owner.set("s", "a", 1)
        owner.set("other", "x", 1)
        owner.set("s", "b", 2)
        owner.delete("s", "a")
        reader.join(timeout=5)
    assert got == [(2, "a"), (4, "b"), (5, "a")]


def test_tail_from_an_old_revision_catches_up_from_the_files(owner: evstate.Store) -> None:
    for i in range(30):
        owner.set("s", f"k{i}", i)
    with follow(owner.path) as follower:  # type: ignore[arg-type]
        revisions = [e.revision for e in follower.tail(start=5, idle_timeout=0.2)]
    assert revisions == list(range(5, 31))


def test_closed_follower_refuses_reads(owner: evstate.Store) -> None:
    follower = follow(owner.path)  # type: ignore[arg-type]
    follower.close()
    follower.close()
    with pytest.raises(evstate.StoreClosedError):
        follower.get("s", "k")


def test_owner_triggers_after_a_replay_shows_the_moved_cursor(tmp_path: Path) -> None:
    """A replay_trigger on the owner: the follower reports the cursor the owner resumes from.

    Batch records written before the replay carry the old, higher cursor; they must not
    win over the replay (the cursor file's ``resets``), as the owner's own open rules.
    """
    with evstate.open(tmp_path / "store") as owner:

        def count(event: Any) -> None:
            event.store.update("out", "n", [{"type": "increment", "path": "n", "by": 1}])

        owner.trigger("counter", count, scope="in", start="earliest")
        for i in range(5):
            owner.set("in", f"k{i}", i)
        owner.wait_for_triggers(timeout=10)
        owner.unregister_trigger("counter")
        before = owner.trigger_status()["counter"]["cursor"]
        owner.replay_trigger("counter", 2)
        with evstate.follow(tmp_path / "store", live=False) as follower:
            shown = follower.owner_triggers()["counter"]["cursor"]
        assert before > 1 and shown == 1
