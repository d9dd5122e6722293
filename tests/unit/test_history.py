"""History, events, at(), restore, verify: what is specific to file and in-memory stores.

The cases every store kind must pass are in tests/conformance/test_history_api.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import evstate
from evstate import UpdateOp


def _writes(store: evstate.Store) -> None:
    store.set("users", "u1", {"n": 1})  # 1
    store.set("users", "u2", {"n": 2})  # 2
    store.update("users", "u1", [UpdateOp.increment("n", 1)])  # 3
    store.delete("users", "u2")  # 4
    store.set("config", "app", {"theme": "dark"})  # 5


# ---- file stores ---------------------------------------------------------------------


def test_snapshot_then_reopen_replays_only_the_tail(tmp_path: Path) -> None:
    with evstate.open(tmp_path) as store:
        for i in range(100):
            store.set("s", str(i), i)
        assert store.snapshot() == 100
        assert (tmp_path / f"{100:020d}.snap").exists()
        store.set("s", "tail", True)
        assert store.snapshot() == 101
        assert store.snapshot() == 101  # nothing changed: no new snapshot
    with evstate.open(tmp_path) as store:
        assert store.revision == 101
        assert len(store.list("s")) == 101
        assert store.verify() == []


def test_periodic_snapshots_come_once_the_log_is_worth_one(tmp_path: Path) -> None:
    with evstate.open(tmp_path, save_interval_ms=100) as store:
        store.set("s", "k", 1)
        time.sleep(0.5)  # five ticks: a few bytes of log are not worth a snapshot
        assert store.stats()["last_snapshot_revision"] is None
        for i in range(12):  # about 1.2 MiB of log (old and new values)
            store.set("s", "k", {"i": i, "pad": "x" * 50_000})
        deadline = time.monotonic() + 5
        while store.stats()["last_snapshot_revision"] != 13 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.stats()["last_snapshot_revision"] == 13


def test_retention_by_revisions_deletes_only_covered_segments(tmp_path: Path) -> None:
    with evstate.open(tmp_path, retention={"revisions": 50}) as store:
        for round_no in range(5):
            for i in range(40):
                store.set("s", str(i), round_no * 100 + i)
            store.snapshot()
        segments_before = store.stats()["segments"]
        result = store.compact()
        stats = store.stats()
        assert result["segments_deleted"] > 0
        assert stats["segments"] < segments_before
        horizon = stats["horizon_revision"]
        assert 0 < horizon <= store.revision - 50
        # everything from the horizon on is still answerable
        assert store.at(horizon).get("s", "0") is not None
        assert store.at(store.revision).list("s") == store.list("s")
        with pytest.raises(evstate.HistoryCompactedError) as info:
            store.at(horizon - 1)
        assert info.value.horizon == horizon
        with pytest.raises(evstate.HistoryCompactedError):
            store.history("s", "0", since=1)
        assert store.history("s", "0")[-1].new_value == 400
        assert store.verify() == []
    with evstate.open(tmp_path) as store:
        assert store.list("s") == {str(i): 400 + i for i in range(40)}
        assert store.verify() == []


def test_retention_by_duration(tmp_path: Path) -> None:
    with evstate.open(tmp_path, retention={"duration": "200ms"}) as store:
        for i in range(20):
            store.set("s", "k", i)
        store.snapshot()
        time.sleep(0.3)
        store.set("s", "k", "new")
        store.snapshot()
        store.compact()
        assert store.stats()["horizon_revision"] >= 20
        assert [e.new_value for e in store.history("s", "k")] == ["new"]


def test_restore_to_writes_an_independent_store(tmp_path: Path) -> None:
    with evstate.open(tmp_path / "src") as store:
        _writes(store)
        restored = store.restore_to(tmp_path / "dst", revision=3)
        with pytest.raises(evstate.StorageError):
            store.restore_to(tmp_path / "dst", revision=2)
    with evstate.open(restored) as copy:
        assert copy.revision == 3
        assert copy.list("users") == {"u1": {"n": 2}, "u2": {"n": 2}}
        copy.set("users", "u3", 3)
        assert copy.revision == 4
        assert copy.verify() == []
    with evstate.open(tmp_path / "src") as store:
        assert store.get("users", "u3") is None


def test_verify_reports_a_corrupt_snapshot(tmp_path: Path) -> None:
    with evstate.open(tmp_path) as store:
        _writes(store)
        store.snapshot()
        snap = tmp_path / f"{5:020d}.snap"
        data = bytearray(snap.read_bytes())
        data[40] ^= 0xFF
        snap.write_bytes(bytes(data))
        problems = store.verify()
    assert problems and "snapshot" in problems[0]


def test_memory_store_history_and_retention() -> None:
    with evstate.open(retention={"revisions": 10}) as store:
        for i in range(30):
            store.set("s", "k", i)
        store.compact()
        assert store.stats()["horizon_revision"] == 20
        assert [e.new_value for e in store.history("s", "k")] == list(range(20, 30))
        assert store.at(25).get("s", "k") == 24
        with pytest.raises(evstate.HistoryCompactedError):
            store.at(5)


def test_events_before_the_horizon_raise(make_store: Callable[..., evstate.Store]) -> None:
    store = make_store(retention={"revisions": 5})
    for i in range(40):
        store.set("s", "k", i)
        if i % 10 == 9:
            store.snapshot()
    store.compact()
    oldest = store.stats()["oldest_revision"]
    assert oldest > 1
    with pytest.raises(evstate.HistoryCompactedError):
        list(store.events(1))
    assert next(e.revision for e in store.events()) == oldest


def test_times_before_the_horizon_raise(make_store: Callable[..., evstate.Store]) -> None:
    store = make_store(retention={"revisions": 5})
    long_ago = datetime.now() - timedelta(days=1)
    for i in range(40):
        store.set("s", "k", i)
        if i % 10 == 9:
            store.snapshot()
    store.compact()
    assert store.stats()["oldest_revision"] > 1
    with pytest.raises(evstate.HistoryCompactedError):
        store.at(time=long_ago)
    with pytest.raises(evstate.HistoryCompactedError):
        store.history("s", "k", since=long_ago)
    with pytest.raises(evstate.HistoryCompactedError):
        list(store.events(long_ago))
    now = datetime.now() + timedelta(seconds=1)
    assert store.at(time=now).get("s", "k") == 39


# ---- reading one key's records -----------------------------------------------------------


def test_history_reads_records_larger_than_one_first_read(tmp_path: Path) -> None:
    """A record longer than the first read of a record (1 KiB) is read whole."""
    values = [{"blob": "x" * size} for size in (10, 1_000, 5_000, 300_000)]
    with evstate.open(tmp_path) as store:
        for value in values:
            store.set("s", "big", value)
            store.set("s", "other", 1)
        assert [e.new_value for e in store.history("s", "big")] == values
    with evstate.open(tmp_path) as store:  # and through the key index files of a reopen
        assert [e.new_value for e in store.history("s", "big")] == values


def test_history_of_a_damaged_record_is_corruption(tmp_path: Path) -> None:
    """A flipped byte in a record that ``history()`` reads is a ``CorruptionError``."""
    with evstate.open(tmp_path) as store:
        store.set("s", "k", {"text": "before"})
        store.set("s", "k", {"text": "marker-value"})
        store.set("s", "k", {"text": "after"})
        assert len(store.history("s", "k")) == 3
        (segment,) = sorted(tmp_path.glob("*.log"))
        data = bytearray(segment.read_bytes())
        at = data.index(b"marker-value")
        data[at] ^= 0x01
        segment.write_bytes(bytes(data))
        with pytest.raises(evstate.CorruptionError, match="checksum"):
            store.history("s", "k")
