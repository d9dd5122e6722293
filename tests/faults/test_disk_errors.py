"""A full disk, failing fsyncs and torn writes, at the log, the snapshots and the cursor file.

Promises (docs/reliability.md): ENOSPC fails writes cleanly with a StorageError, reads keep
working, and once space is freed the store writes again (or reopens cleanly), losing
nothing acknowledged. A failed fsync of the log fails closed (StoreFailedError, read-only,
never retry-and-acknowledge). A failed fsync of a snapshot or of the cursor file fails that
file (it is never renamed into place or trusted), and the next attempt writes a new file.
"""

from __future__ import annotations

import errno
import time
from pathlib import Path
from typing import Any

import cbor2
import pytest

import evstate
from evstate import UpdateOp
from evstate.backends.file.segment import unframe_single
from evstate.testing import FaultyIO, crash
from tests.faults.harness import open_store


def _count(event: Any) -> None:
    event.store.update("out", "n", [UpdateOp.increment("n", 1)])


def _reads_work(store: evstate.Store, acked: dict[str, int]) -> None:
    assert store.list("s") == dict(sorted(acked.items()))
    for key, value in acked.items():
        assert store.get("s", key) == value
        assert store.history("s", key)[-1].new_value == value
    assert store.at(store.revision).list("s") == dict(sorted(acked.items()))
    assert store.verify() == []


def _reopened(path: Path) -> dict[str, int]:
    with open_store(path) as store:
        assert store.verify() == []
        return store.list("s")


@pytest.mark.parametrize("free", [0, 50, 1000])
def test_enospc_fails_writes_cleanly_and_writes_resume_when_space_is_freed(
    tmp_path: Path, free: int
) -> None:
    io = FaultyIO()
    store = open_store(tmp_path, io)
    acked: dict[str, int] = {}
    for i in range(20):
        store.set("s", f"k{i}", i)
        acked[f"k{i}"] = i
    io.fill_disk(free)
    failures = 0
    for i in range(20, 60):
        try:
            store.set("s", f"k{i}", i)
            acked[f"k{i}"] = i
        except evstate.StorageError as exc:
            assert not isinstance(exc, evstate.StoreFailedError)
            assert "No space left" in str(exc) or "no space left" in str(exc)
            failures += 1
    assert failures > 0
    _reads_work(store, acked)
    io.free_space()
    revision = store.revision
    store.set("s", "after", 1)  # gap-free after the failures
    acked["after"] = 1
    assert store.revision == revision + 1
    _reads_work(store, acked)
    crash(store, io)  # a power cut: every acknowledged write is durable
    assert _reopened(tmp_path) == dict(sorted(acked.items()))


def test_enospc_from_fsync_fails_closed_and_reopens_cleanly(tmp_path: Path) -> None:
    """A full disk reported by fsync (delayed allocation): the write's bytes are lost, so the
    store must never acknowledge it, nor anything after it."""
    io = FaultyIO()
    store = open_store(tmp_path, io)
    store.set("s", "a", 1)
    io.fail_at("before_fsync", kind="segment", error=errno.ENOSPC)
    with pytest.raises(evstate.StoreFailedError):
        store.set("s", "b", 2)
    io.clear()  # space is freed: still read-only, never retry-and-acknowledge
    for call in (lambda: store.set("s", "c", 3), store.flush, store.snapshot):
        with pytest.raises(evstate.StoreFailedError):
            call()
    assert store.get("s", "a") == 1  # reads keep working
    crash(store, io)
    with open_store(tmp_path) as reopened:
        assert reopened.list("s") == {"a": 1}
        reopened.set("s", "c", 3)
    assert _reopened(tmp_path) == {"a": 1, "c": 3}


def test_enospc_during_a_snapshot_and_a_checkpoint(tmp_path: Path) -> None:
    io = FaultyIO()
    store = open_store(tmp_path, io)
    seen: list[int] = []
    store.trigger("t", lambda e: seen.append(e.revision), start="earliest")
    for i in range(30):
        store.set("s", str(i), i)
    store.wait_for_triggers(timeout=10)
    store._cursors.checkpoint()
    io.fill_disk(0)
    with pytest.raises(evstate.StorageError):
        store.snapshot()
    with pytest.raises(evstate.StorageError):
        store.set("s", "late", 1)
    store._cursors.dirty = True
    store._cursors.checkpoint()  # fails, logged, retried later (a fresh .tmp each time)
    assert not list(tmp_path.glob("*.snap.tmp"))
    io.free_space()
    store.set("s", "late", 1)
    store.wait_for_triggers(timeout=10)
    assert store.snapshot() == store.revision
    store._cursors.checkpoint()
    saved = cbor2.loads(unframe_single((tmp_path / "triggers.cbor").read_bytes()))
    assert saved["triggers"]["t"]["cursor"] == store.revision
    assert seen == list(range(1, store.revision + 1))
    crash(store, io)
    with open_store(tmp_path) as reopened:
        assert reopened.get("s", "late") == 1 and reopened.verify() == []


@pytest.mark.parametrize(
    ("point", "kind"),
    [
        ("before_write", "snapshot"),
        ("before_fsync", "snapshot"),
        ("before_rename", "snapshot"),
        ("before_fsync_dir", "snapshot"),
        ("snapshot_write", None),
    ],
)
def test_a_failed_snapshot_is_never_used_and_the_next_one_is_fresh(
    tmp_path: Path, point: str, kind: str | None
) -> None:
    io = FaultyIO()
    store = open_store(tmp_path, io)
    for i in range(40):
        store.set("s", str(i), i)
    io.fail_at(point, kind=kind)
    with pytest.raises(evstate.StorageError) as info:
        store.snapshot()
    assert not isinstance(info.value, evstate.StoreFailedError)  # the log is unaffected
    assert not list(tmp_path.glob("*.snap.tmp"))
    store.set("s", "after", 1)  # writes go on
    revision = store.snapshot()  # a new file, written and fsynced from scratch
    assert revision == store.revision
    crash(store, io)  # power cut: the new snapshot and every write are there
    with open_store(tmp_path) as reopened:
        assert reopened.get("s", "after") == 1
        assert reopened.stats()["last_snapshot_revision"] == revision
        assert reopened.verify() == []


def test_a_failed_fsync_while_sealing_a_segment_for_a_snapshot_fails_closed(
    tmp_path: Path,
) -> None:
    io = FaultyIO()
    store = open_store(tmp_path, io, fsync="never")
    for i in range(10):
        store.set("s", str(i), i)
    io.fail_at("before_fsync", kind="segment")
    with pytest.raises(evstate.StoreFailedError):
        store.snapshot()
    io.clear()
    with pytest.raises(evstate.StoreFailedError):
        store.set("s", "x", 1)
    assert store.get("s", "9") == 9
    crash(store, io)
    with open_store(tmp_path) as reopened:  # the unsynced writes are lost, not invented
        assert reopened.revision == 0 and reopened.verify() == []


@pytest.mark.parametrize(
    ("point", "kind"),
    [
        ("cursor_save", None),
        ("before_write", "cursor"),
        ("before_fsync", "cursor"),
        ("before_rename", "cursor"),
        ("before_fsync_dir", "cursor"),
    ],
)
def test_a_failed_cursor_checkpoint_is_retried_with_a_fresh_file(
    tmp_path: Path, point: str, kind: str | None
) -> None:
    io = FaultyIO()
    store = open_store(tmp_path, io)
    seen: list[int] = []
    store.trigger("t", lambda e: seen.append(e.revision), start="earliest")
    for i in range(20):
        store.set("s", str(i), i)
    store.wait_for_triggers(timeout=10)
    fault = io.fail_at(point, kind=kind)
    deadline = time.monotonic() + 10
    while not fault.fired:  # the background checkpointer hits it
        store._cursors.dirty = True
        assert time.monotonic() < deadline
        time.sleep(0.02)
    store.set("s", "after", 1)  # the store is unaffected
    store.wait_for_triggers(timeout=10)
    store._cursors.dirty = True
    store._cursors.checkpoint()
    crash(store, io)
    with open_store(tmp_path) as reopened:
        assert reopened.trigger_status()["t"]["cursor"] == reopened.revision
    assert seen == list(range(1, 22))


def test_a_failed_log_flush_before_a_checkpoint_fails_closed(tmp_path: Path) -> None:
    """The checkpoint fsyncs the log first (cursors may cover batch writes): if that fsync
    fails, the store fails closed and no cursor file is written past the durable log."""
    io = FaultyIO()
    store = open_store(tmp_path, io, fsync="never")
    store.trigger("count", _count, scope="in")
    store.set("in", "a", 1)
    store.wait_for_triggers(timeout=10)
    io.fail_at("before_fsync", kind="segment")
    store._cursors.dirty = True
    store._cursors.checkpoint()
    with pytest.raises(evstate.StoreFailedError):
        store.set("in", "b", 2)
    crash(store, io)
    with open_store(tmp_path) as reopened:
        counted = (reopened.get("out", "n") or {}).get("n", 0)
        assert reopened.trigger_status().get("count", {"cursor": 0})["cursor"] <= reopened.revision
        reopened.trigger("count", _count, scope="in")
        reopened.wait_for_triggers(timeout=10)
        matching = sum(1 for _ in reopened.events(scope="in"))
        assert (reopened.get("out", "n") or {}).get("n", 0) == matching
        assert counted <= matching


@pytest.mark.parametrize("tear", [1, 0.5, -1])
def test_a_torn_record_after_a_process_crash_is_cut_off(tmp_path: Path, tear: float) -> None:
    io = FaultyIO()
    store = open_store(tmp_path, io)
    for i in range(5):
        store.set("s", str(i), {"i": i, "pad": "x" * 50})
    size = 100 if tear == -1 else tear
    io.crash_at("before_append", mode="process", tear=size)
    with pytest.raises(evstate.StorageError):
        store.set("s", "torn", {"pad": "y" * 200})
    crash(store, io)
    with open_store(tmp_path) as reopened:
        assert reopened.revision == 5
        assert reopened.get("s", "torn") is None
        assert any("torn tail" in note for note in reopened.recovery_notes)
        reopened.set("s", "torn", 1)
    assert _reopened(tmp_path)["torn"] == 1
