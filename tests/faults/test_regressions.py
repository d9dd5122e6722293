"""Reproducers of the bugs the fault tests found (docs/reliability.md, "Regressions").

Each test failed before its fix and names the bug in its docstring.
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
from evstate.backends.file.segment import frame_record
from evstate.testing import FaultyIO, crash
from tests.faults.harness import open_store


def _fill_segment(store: evstate.Store, path: Path, limit: int = 3900) -> None:
    """Write until the first segment is nearly full (the next big record rolls it)."""
    segment = path / "00000000000000000001.log"
    while segment.stat().st_size < limit:
        store.set("fill", str(store.revision), "x" * 100)


def test_acknowledged_write_survives_a_power_cut_after_a_crash_during_a_roll(
    tmp_path: Path,
) -> None:
    """Bug: recovery did not fsync the directory holding the newest segment.

    A process crash after a new segment's header was written and fsynced but before the
    directory fsync left a segment whose name was not durable. The reopened store appended
    to it and acknowledged writes (fsyncing the file only); a power cut then removed the
    whole segment and the acknowledged writes with it.
    """
    io = FaultyIO()
    store = open_store(tmp_path, io)
    _fill_segment(store, tmp_path)
    io.crash_at("before_fsync_dir", kind="segment", mode="process")
    with pytest.raises(evstate.StorageError):
        store.set("s", "rolls", "y" * 300)
    crash(store, io)
    io.restart()
    store = open_store(tmp_path, io)
    store.set("s", "acked", 1)  # returned under fsync: always
    acked = store.revision
    crash(store, io, "forget")
    with open_store(tmp_path) as reopened:
        assert reopened.revision >= acked
        assert reopened.get("s", "acked") == 1


def test_recovered_records_are_durable_before_anyone_sees_them(tmp_path: Path) -> None:
    """Bug: records a crashed process left in the page cache were served without an fsync.

    After a process crash between a record's write and its fsync, the reopened store
    handed the record to triggers (and checkpointed a cursor past it) without fsyncing it;
    a power cut then took it back, and its revision was reused for another event: the
    trigger had acted on a write that no longer existed and skipped the new one.
    """
    io = FaultyIO()
    store = open_store(tmp_path, io)
    store.set("s", "a", 1)
    io.crash_at("before_fsync", kind="segment", mode="process")
    with pytest.raises(evstate.StoreFailedError):
        store.set("s", "b", 2)  # written, never fsynced, not acknowledged
    crash(store, io)
    io.restart()
    io.clear()
    seen: list[tuple[int, Any]] = []
    store = open_store(tmp_path, io)
    store.trigger("t", lambda e: seen.append((e.revision, e.new_value)), start="earliest")
    store.wait_for_triggers(timeout=10)
    store._cursors.checkpoint()  # the cursor is durable too
    crash(store, io, "forget")
    io.restart()
    with open_store(tmp_path, io) as reopened:
        for revision, value in seen:  # everything delivered is still there
            assert [e.new_value for e in reopened.events(revision, revision)] == [value]
        reopened.set("s", "c", 3)
        again: list[int] = []
        reopened.trigger("t", lambda e: again.append(e.revision))
        reopened.wait_for_triggers(timeout=10)
        assert reopened.revision in again  # the new event is not skipped


def test_at_never_starts_from_an_orphan_snapshot(tmp_path: Path) -> None:
    """Bug: after a crash between compaction's two phases, at() returned a wrong state.

    Compaction deletes the segments up to its base snapshot, then the older snapshots. A
    crash in between leaves an older snapshot whose following records are gone. The horizon
    was computed from the oldest snapshot, so at() of a revision between it and the base
    replayed nothing after the orphan and answered the orphan's state; verify() reported a
    false problem.
    """
    io = FaultyIO()
    store = open_store(tmp_path, io, retention={"revisions": 5})
    for i in range(1, 61):
        store.set("s", "k", i)
        if i % 20 == 0:
            store.snapshot()
    io.crash_at("before_remove", kind="snapshot")  # segments gone, old snapshots not yet
    with pytest.raises(evstate.StorageError):
        store.compact()
    crash(store, io)
    with open_store(tmp_path) as reopened:
        assert reopened.verify() == []
        horizon = reopened.stats()["horizon_revision"]
        for revision in range(0, 61):
            if revision < horizon:
                with pytest.raises(evstate.HistoryCompactedError):
                    reopened.at(revision)
            else:
                assert reopened.at(revision).get("s", "k") == (revision or None)


@pytest.mark.parametrize(
    "body",
    [
        {"version": 1, "triggers": {"t": 5}},
        {"version": 1, "triggers": [1]},
        {"version": 1, "triggers": {"t": {"cursor": "3"}}},
        {"version": 1, "triggers": {"t": {"cursor": 1, "parked": 5}}},
        {"version": 1, "triggers": {"t": {"cursor": -1}}},
        {"version": 1, "triggers": {"t": {"cursor": 1, "parked": [{"revision": "x"}]}}},
    ],
)
def test_a_misshapen_cursor_file_is_reported_and_ignored(tmp_path: Path, body: Any) -> None:
    """Bug: a decodable but misshapen triggers.cbor made open() raise AttributeError /
    TypeError / ValueError, and leaked the directory lock (the next open in the process
    raised StoreLockedError). docs/format.md section 7 says such a file is reported and ignored."""
    with evstate.open(tmp_path) as store:
        store.set("s", "k", 1)
    (tmp_path / "triggers.cbor").write_bytes(frame_record(cbor2.dumps(body)))
    with evstate.open(tmp_path) as store:
        assert store.get("s", "k") == 1
        assert "t" not in store.trigger_status()
    with evstate.open(tmp_path) as store:  # the lock was released
        assert store.revision == 1


def test_a_full_disk_while_rolling_a_segment_is_a_plain_write_failure(tmp_path: Path) -> None:
    """Bug: ENOSPC while starting a new segment turned the store read-only ("fsync
    failed"), although nothing had been fsynced; after space was freed every write still
    raised StoreFailedError until a reopen."""
    io = FaultyIO()
    store = open_store(tmp_path, io)
    _fill_segment(store, tmp_path)
    io.fill_disk(10)  # not even a segment header fits
    for _ in range(3):
        with pytest.raises(evstate.StorageError) as info:
            store.set("s", "big", "y" * 300)
        assert not isinstance(info.value, evstate.StoreFailedError)
    io.free_space()
    store.set("s", "big", "y" * 300)  # rolls now
    assert len(list(tmp_path.glob("*.log"))) == 2
    acked = store.revision
    crash(store, io)
    with open_store(tmp_path) as reopened:
        assert reopened.revision == acked and reopened.recovery_notes == []


def test_a_trigger_retries_an_event_whose_batch_write_failed(tmp_path: Path) -> None:
    """Bug: a failed batch write (ENOSPC) stopped the trigger's runner for good; after space
    was freed the trigger never caught up (until it was registered again or the store
    reopened)."""
    io = FaultyIO()
    store = open_store(tmp_path, io)
    store.trigger(
        "count", lambda e: e.store.update("out", "n", [UpdateOp.increment("n", 1)]), scope="in"
    )
    store.triggers_enabled = False
    store.set("in", "a", 1)
    io.fill_disk(0)
    store.triggers_enabled = True
    deadline = time.monotonic() + 5
    while store.trigger_status()["count"]["last_error"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    io.free_space()
    store.set("in", "b", 2)
    store.wait_for_triggers(timeout=10)
    assert store.get("out", "n") == {"n": 2}
    store.close()


def test_a_failed_snapshot_raises_storage_error_and_frees_its_space(tmp_path: Path) -> None:
    """Bug: a snapshot that failed to write (ENOSPC) raised a bare OSError and left its
    .snap.tmp file behind until the next open, holding disk space."""
    io = FaultyIO()
    store = open_store(tmp_path, io)
    for i in range(50):
        store.set("s", str(i), "v" * 50)
    io.fill_disk(100)
    with pytest.raises(evstate.StorageError):
        store.snapshot()
    assert not list(tmp_path.glob("*.snap.tmp"))
    io.free_space()
    assert store.snapshot() == store.revision
    store.close()


def test_an_io_error_while_opening_raises_storage_error(tmp_path: Path) -> None:
    """Bug: an I/O error during recovery escaped open() as a bare OSError (the contract
    says StorageError)."""
    with evstate.open(tmp_path) as store:
        store.set("s", "k", 1)
    (tmp_path / "00000000000000000002.log").write_bytes(b"")  # a crashed roll's leftover
    for point in ("before_remove", "before_fsync"):  # removing it; the fsync at open
        io = FaultyIO()
        io.fail_at(point, kind="segment", error=errno.EIO)
        with pytest.raises(evstate.StorageError):
            open_store(tmp_path, io)
        assert io.faults[0].fired == 1
    with evstate.open(tmp_path) as store:  # the lock was released; nothing was lost
        assert store.get("s", "k") == 1


@pytest.mark.parametrize("cursor", [None, ("t", 1)])
def test_an_empty_batch_record_is_corruption(tmp_path: Path, cursor: Any) -> None:
    """Bug: a checksummed batch record holding no events was replayed as nothing (and with
    a cursor, open() crashed with IndexError). Only a buggy writer or a crafted file makes
    one; it is now a CorruptionError naming the file and offset."""
    from evstate.backends.file.segment import frame_record, read_header
    from evstate.events import encode_batch

    with evstate.open(tmp_path) as store:
        store.set("s", "k", 1)
    segment = tmp_path / "00000000000000000001.log"
    size = segment.stat().st_size
    salt = read_header(segment.read_bytes())[1]  # framed as the store's writer frames
    with open(segment, "ab") as f:
        f.write(frame_record(encode_batch([], cursor), salt))
    with pytest.raises(evstate.CorruptionError) as info:
        evstate.open(tmp_path)
    assert info.value.offset == size
    assert segment.stat().st_size > size  # nothing was truncated


def test_a_snapshot_with_misshapen_content_is_ignored(tmp_path: Path) -> None:
    """Bug: a snapshot whose checksums were right but whose trailer cursors or chunk keys
    had the wrong types was used: open() then crashed (TypeError), instead of ignoring the
    snapshot as docs/format.md section 5 says for a bad one."""
    import struct
    import zlib

    from evstate.backends.file.segment import frame_record

    with evstate.open(tmp_path) as store:
        for i in range(5):
            store.set("s", str(i), i)
    head = struct.pack("<4sHHQQ", b"EVSS", 1, 0, 5, 0)
    header = head + struct.pack("<II", zlib.crc32(head), 0)
    for chunk, cursors in [
        (None, {"t": None}),
        (["s", [["unhashable"], b"\x01"]], {}),
        (["s", ["k", 1]], {}),
    ]:
        chunks = [] if chunk is None else [chunk]
        body = b"".join(frame_record(cbor2.dumps(c)) for c in chunks)
        trailer = frame_record(cbor2.dumps(["end", len(chunks), len(chunks), cursors]))
        (tmp_path / "00000000000000000005.snap").write_bytes(header + body + trailer)
        with evstate.open(tmp_path) as store:
            assert store.list("s") == {str(i): i for i in range(5)}
            assert any("bad snapshot" in note for note in store.recovery_notes)


@pytest.mark.parametrize("pause", ["before_reading", "after_reading"])
def test_compaction_during_an_index_build_loses_no_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pause: str
) -> None:
    """Bug (found by the soak): compaction while history()'s index was being built dropped
    the appends noted meanwhile; the index was installed anyway, and the next write failed
    with AssertionError("index out of step") after its record was in the log, but before it
    was applied to the table (a write half done). A build could also read a segment that
    compaction had just deleted (FileNotFoundError from history())."""
    import threading

    from evstate.backends.file import timeline

    store = open_store(tmp_path, retention={"revisions": 5})
    for i in range(1, 121):
        store.set("s", f"k{i % 5}", {"i": i, "pad": "x" * 100})
        if i % 40 == 0:
            store.snapshot()
    real_build = timeline.LogIndex.build
    entered, release = threading.Event(), threading.Event()

    def slow_build(cls: Any, segments: Any, head: int) -> Any:
        first = not entered.is_set()
        if first and pause == "before_reading":
            entered.set()
            release.wait(10)
        built = real_build(segments, head)
        if first and pause == "after_reading":
            entered.set()
            release.wait(10)
        return built

    monkeypatch.setattr(timeline.LogIndex, "build", classmethod(slow_build))
    results: list[Any] = []
    reader = threading.Thread(target=lambda: results.append(store.history("s", "k1")))
    reader.start()
    assert entered.wait(10)
    store.compact()  # deletes old segments and drops the index being built
    store.set("s", "k1", "during")  # noted for the build, then dropped by the compaction
    release.set()
    reader.join(10)
    store.set("s", "k1", "after")  # raised AssertionError before the fix
    assert store.get("s", "k1") == "after"
    history = store.history("s", "k1", since=store.stats()["oldest_revision"])
    assert [e.new_value for e in history][-2:] == ["during", "after"]
    assert results and store.verify() == []
    store.close()


def test_a_damaged_segment_behind_a_snapshot_is_reported_not_skipped(tmp_path: Path) -> None:
    """Bug (found by tests/fuzz/test_corrupted_files.py): open() does not read segments a
    snapshot covers, and reads of them stopped silently at the first damaged record: at()
    answered a wrong (older) state, events() ended early, and a trigger catching up there
    spun without progress. Now every such read raises CorruptionError."""
    from evstate.backends.file.index import scan_records

    with evstate.open(tmp_path, segment_size_bytes=4096, retention="forever") as store:
        for i in range(1, 121):
            store.set("s", "k", {"i": i, "pad": "x" * 60})
            if i % 40 == 0:
                store.snapshot()
    segments = sorted(tmp_path.glob("*.log"))
    target = next(
        (path, offset)
        for path in segments
        for offset, record in scan_records(str(path))
        if record.revision == 45
    )
    data = bytearray(target[0].read_bytes())
    data[target[1] + 12] ^= 0xFF  # inside revision 45's record
    target[0].write_bytes(bytes(data))
    seen: list[int] = []
    with evstate.open(tmp_path) as store:  # opens from the snapshot at 80
        assert store.get("s", "k")["i"] == 120
        with pytest.raises(evstate.CorruptionError):
            store.at(50)
        with pytest.raises(evstate.CorruptionError):
            list(store.events(41, 60))
        assert store.at(90).get("s", "k")["i"] == 90  # beyond the damage: fine
        store.trigger("t", lambda e: seen.append(e.revision), start=41)
        deadline = time.monotonic() + 5
        while "corruption" not in (store.trigger_status()["t"]["last_error"] or ""):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert seen == list(range(41, 45))  # stopped at the damage, never past it
        assert store.verify() != []
