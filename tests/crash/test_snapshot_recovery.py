"""Snapshot recovery rules and crashes at every point of a snapshot write, by name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import evstate
from evstate.backends.file.snapshot import snapshot_name

CRASHER = Path(__file__).with_name("snapshot_crasher.py")


def _populate(path: Path, n: int = 50, *, snapshots: tuple[int, ...] = (20, 40)) -> dict[str, int]:
    model = {}
    with evstate.open(path, retention="forever") as store:
        for i in range(1, n + 1):
            store.set("s", str(i % 30), i)
            model[str(i % 30)] = i
            if i in snapshots:
                store.snapshot()
    return model


def test_newest_snapshot_is_used(tmp_path: Path) -> None:
    model = _populate(tmp_path)
    with evstate.open(tmp_path) as store:
        assert store.list("s") == dict(sorted(model.items()))
        assert store.recovery_notes == []
        assert store.verify() == []


@pytest.mark.parametrize("damage", ["truncated", "bad_checksum", "empty", "missing_trailer"])
def test_bad_newest_snapshot_falls_back_to_an_older_one(tmp_path: Path, damage: str) -> None:
    model = _populate(tmp_path)
    snap = tmp_path / snapshot_name(40)
    data = bytearray(snap.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "bad_checksum":
        data[-20] ^= 0xFF
    elif damage == "empty":
        data = bytearray()
    else:
        data = data[:-20]
    snap.write_bytes(bytes(data))
    with evstate.open(tmp_path) as store:
        assert store.list("s") == dict(sorted(model.items()))
        assert store.revision == 50
        assert any("bad snapshot" in note for note in store.recovery_notes)


def test_all_snapshots_bad_falls_back_to_the_full_log(tmp_path: Path) -> None:
    model = _populate(tmp_path)
    for rev in (20, 40):
        (tmp_path / snapshot_name(rev)).write_bytes(b"garbage")
    with evstate.open(tmp_path) as store:
        assert store.list("s") == dict(sorted(model.items()))


def test_bad_snapshot_after_compaction_is_an_error_not_wrong_state(tmp_path: Path) -> None:
    with evstate.open(tmp_path, retention={"revisions": 5}) as store:
        for i in range(30):
            store.set("s", "k", i)
            if i % 10 == 9:
                store.snapshot()
        store.compact()
        base = store.stats()["horizon_revision"]
    for snap in tmp_path.glob("*.snap"):
        snap.write_bytes(b"garbage")
    with pytest.raises(evstate.CorruptionError):
        evstate.open(tmp_path)
    assert base > 0


def test_leftover_temp_snapshot_is_ignored_and_removed(tmp_path: Path) -> None:
    model = _populate(tmp_path, snapshots=(20,))
    (tmp_path / (snapshot_name(50) + ".tmp")).write_bytes(b"half a snapshot")
    with evstate.open(tmp_path) as store:
        assert store.list("s") == dict(sorted(model.items()))
        assert any("unfinished snapshot" in note for note in store.recovery_notes)
    assert not (tmp_path / (snapshot_name(50) + ".tmp")).exists()


@pytest.mark.crash
@pytest.mark.parametrize(
    "point",
    [
        "temp_written",
        "before_rename",
        "after_rename_before_dir_fsync",
        "after_snapshot",
        "compaction_after_first_segment",
        "compaction_mid_segments",
        "compaction_before_snapshot_delete",
    ],
)
def test_crash_during_snapshot_write_opens_to_the_right_state(tmp_path: Path, point: str) -> None:
    """A real process is SIGKILLed at each point of a snapshot write."""
    proc = subprocess.run(
        [sys.executable, str(CRASHER), str(tmp_path), point],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert f"killed at {point}" in proc.stderr, "the crash point was never reached"
    acked = dict(line.split("=") for line in proc.stdout.split())
    with evstate.open(tmp_path) as store:
        got = {k: str(v) for k, v in store.list("s").items()}
        assert got == acked
        assert store.verify() == []
        store.set("s", "after", 1)
    with evstate.open(tmp_path) as store:
        assert store.get("s", "after") == 1
    assert os.path.isdir(tmp_path)
