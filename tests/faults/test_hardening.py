"""Regression tests of the second adversarial review (docs/reliability.md, "Regressions").

Each test is named after the defect it pins down and says what happened before. The
defects that concern every store kind are in the conformance suite
(tests/conformance/test_hostile_inputs.py); the wire's are in tests/server/test_hostile_frames.py.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

import evstate
from evstate.backends.file.segment import frame_record
from evstate.config import Config, parse_config_text, validate_config
from evstate.events import UPDATED, EventRecord, encode_record
from evstate.testing import FaultyIO


def _crafted_frame() -> str:
    """Text whose UTF-8 is a complete, checksummed (unsalted) kind-1 record frame."""
    for n in range(1_000_000):
        record = EventRecord(7, 5, UPDATED, "s", f"k{n}", b"A", b"B")
        frame = frame_record(encode_record(record))
        try:
            return frame.decode("utf-8")
        except UnicodeDecodeError:
            continue
    raise AssertionError("no frame that is valid UTF-8 was found")


def test_a_torn_tail_inside_a_users_string_is_a_torn_tail(tmp_path: Path) -> None:
    """Bug: a value whose UTF-8 held bytes shaped like len|crc|record made recovery see
    "valid data follows" after a torn write and refuse to open, forever. Record checksums
    now start from a random per-segment salt, which no user-chosen bytes can match."""
    fake = _crafted_frame()
    with evstate.open(tmp_path) as store:
        store.set("s", "a", 1)
        store.set("s", "b", {"note": "x" * 10 + fake + "y" * 10})
    segment = next(tmp_path.glob("*.log"))
    data = segment.read_bytes()
    cut = data.rindex(fake.encode()) + len(fake.encode()) + 3  # torn inside the value
    segment.write_bytes(data[:cut])
    (tmp_path / "HEAD").unlink()  # as a crashed writer leaves it: no clean close
    with evstate.open(tmp_path) as store:
        assert store.revision == 1
        assert store.get("s", "b") is None
        assert any("truncated torn tail" in note for note in store.recovery_notes)
        assert store.verify() == []


@pytest.mark.parametrize("value", ["", "~", "null", "  ", "# a comment"])
def test_an_auth_token_that_resolves_to_nothing_refuses_to_start(value: str) -> None:
    """Bug: ``auth_token: ${VAR}`` with VAR empty, ``~``, ``null``, blank or a comment made
    the server run without auth and log nothing."""
    text = "workers:\n  - name: iii-worker-manager\n    config:\n      auth_token: ${TOKEN}\n"
    with pytest.raises(evstate.ConfigError) as info:
        validate_config(parse_config_text(text, env={"TOKEN": value}))
    assert len(info.value.problems) == 1
    assert "auth_token" in info.value.problems[0]
    with pytest.raises(evstate.ConfigError):
        Config(server_auth_token=value)


def test_an_auth_token_is_never_read_as_yaml() -> None:
    """Bug: ``abc #tail`` became ``abc`` (the rest read as a YAML comment)."""
    text = "workers:\n  - name: iii-worker-manager\n    config:\n      auth_token: ${TOKEN}\n"
    config = validate_config(parse_config_text(text, env={"TOKEN": "abc #tail"}))
    assert config.server_auth_token == "abc #tail"


def test_opening_a_new_store_on_a_full_disk_releases_everything(tmp_path: Path) -> None:
    """Bug: the lock was taken, a write failed with a bare OSError, and the lock leaked: once
    space was freed, the same process got StoreLockedError until it restarted."""
    io = FaultyIO()
    config = Config(file_path=str(tmp_path / "store"))
    io.fill_disk(0)
    with pytest.raises(evstate.StorageError):
        evstate.Store(config, io=io)
    io.free_space()
    with evstate.Store(config, io=io) as store:
        store.set("s", "k", 1)
        assert store.get("s", "k") == 1


def test_a_read_only_file_system_is_a_storage_error(tmp_path: Path) -> None:
    """Bug: a read-only file system gave a bare OSError (and a held lock)."""
    io = FaultyIO()
    io.inject("before_create", kind="segment", errno=errno.EROFS, times=None)
    config = Config(file_path=str(tmp_path / "store"))
    with pytest.raises(evstate.StorageError) as info:
        evstate.Store(config, io=io)
    assert "Read-only file system" in str(info.value)
    io.clear()
    with evstate.Store(config, io=io) as store:  # nothing was left locked
        assert store.revision == 0


def test_a_nul_in_the_path_is_a_config_error(tmp_path: Path) -> None:
    """Bug: a NUL byte in the path raised ValueError."""
    with pytest.raises(evstate.ConfigError, match="NUL"):
        evstate.open(str(tmp_path / "a\0b"))


def test_a_lock_that_is_a_directory_does_not_stop_the_store(tmp_path: Path) -> None:
    """Bug: open raised IsADirectoryError when LOCK was a directory. The lock is on the
    store directory itself; LOCK only carries the pid, best effort."""
    (tmp_path / "LOCK").mkdir()
    with evstate.open(tmp_path) as store:
        store.set("s", "k", 1)
    with evstate.open(tmp_path) as store:
        assert store.get("s", "k") == 1


def test_a_symlinked_lock_file_is_never_written_through(tmp_path: Path) -> None:
    """Bug: open followed a LOCK symlink and truncated and overwrote whatever it named."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    (store_dir / "LOCK").symlink_to(victim)
    with evstate.open(store_dir) as store:
        store.set("s", "k", 1)
    assert victim.read_text() == "precious\n"


def test_deleting_lock_does_not_admit_a_second_writer(tmp_path: Path) -> None:
    """Bug: after ``rm LOCK`` a second writer opened the directory, and the two wrote two
    revision 4001s. The lock is an flock on the directory itself, which no rm removes."""
    with evstate.open(tmp_path) as first:
        first.set("s", "k", 1)
        (tmp_path / "LOCK").unlink()
        with pytest.raises(evstate.StoreLockedError):
            evstate.open(tmp_path)
        first.set("s", "k", 2)
    with evstate.open(tmp_path) as store:
        assert store.revision == 2 and store.verify() == []


def test_a_missing_newest_segment_is_corruption_not_an_older_store(tmp_path: Path) -> None:
    """Bug: after ``rm`` of the newest segment the store opened at an older revision with no
    note, and verify said ok. A clean close records the head it reached (HEAD); the log
    must reach it. The open that refuses changes no file."""
    with evstate.open(tmp_path, segment_size_bytes=4096) as store:
        for i in range(200):
            store.set("s", f"k{i % 9}", {"i": i, "pad": "z" * 60})
    segments = sorted(tmp_path.glob("*.log"))
    assert len(segments) > 2
    segments[-1].unlink()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(evstate.CorruptionError, match="had reached revision 200"):
        evstate.open(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    with evstate.follow(tmp_path, live=False) as follower:
        assert any("had reached revision 200" in p for p in follower.verify())


def test_a_flipped_bit_in_a_follower_cursor_file_is_caught(tmp_path: Path) -> None:
    """Bug: follower cursor files had no checksum: one flipped bit silently moved the cursor
    and events were skipped. They are now framed and checksummed like triggers.cbor."""
    with evstate.open(tmp_path) as owner:
        for i in range(10):
            owner.set("s", f"k{i}", i)
        seen: list[int] = []
        with evstate.follow(tmp_path) as follower:
            follower.trigger("mirror", lambda e: seen.append(e.revision), start="earliest")
            follower.wait_for_triggers(timeout=10)
        assert seen == list(range(1, 11))
        cursor_file = next((tmp_path / "followers").glob("*.cursor"))
        data = bytearray(cursor_file.read_bytes())
        data[len(data) // 2] ^= 0x04
        cursor_file.write_bytes(bytes(data))
        unreadable = pytest.raises(evstate.StorageError, match="unreadable follower cursor file")
        with evstate.follow(tmp_path) as follower, unreadable:
            follower.trigger("mirror", seen.append)


def test_a_follower_trigger_with_a_very_long_name_works(tmp_path: Path) -> None:
    """Bug: follower triggers raised OSError(ENAMETOOLONG) for long names."""
    name = "projection-" + "é" * 300
    with evstate.open(tmp_path) as owner:
        owner.set("s", "k", 1)
        seen: list[int] = []
        with evstate.follow(tmp_path) as follower:
            follower.trigger(name, lambda e: seen.append(e.revision), start="earliest")
            follower.wait_for_triggers(timeout=10)
        assert seen == [1]
        with evstate.follow(tmp_path, live=False) as follower:
            assert follower.trigger_status()[name]["cursor"] == 1


def test_a_handler_error_with_undecodable_bytes_is_parked_and_survives_reopen(
    tmp_path: Path,
) -> None:
    """Bug: a handler raising an exception whose text held undecodable bytes
    (``os.fsdecode(b"x\\xff")``) made every later cursor checkpoint and snapshot fail, and
    its dead letter was gone after reopen."""
    with evstate.open(tmp_path) as store:
        store._triggers.delivery.backoff = 0.001
        ok: list[int] = []

        def bad(event: object) -> None:
            raise RuntimeError(os.fsdecode(b"no such file x\xff"))

        store.trigger("bad", bad)
        store.trigger("good", lambda e: ok.append(e.revision))
        store.set("s", "k", 1)
        store.wait_for_triggers(timeout=10)
        store.snapshot()
        store.set("s", "k", 2)
        store.wait_for_triggers(timeout=10)
    with evstate.open(tmp_path) as store:
        parked = store.parked_events("bad")
        assert [p["revision"] for p in parked] == [1, 2]
        assert "no such file x" in parked[0]["error"]
        assert store.trigger_status()["good"]["cursor"] == 2
        assert store.verify() == []


def _bytes_on_disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_slow_writes_leave_a_bounded_directory(tmp_path: Path) -> None:
    """Bug: 16 writes slower than save_interval_ms on a store holding a 0.5 MB value left
    33 files and 8 MB: every snapshot sealed a segment, each slow write got a segment and a
    full snapshot, and retention deleted none of them. Now a snapshot comes only when the
    log since the last one is as large as it (so no segment it seals is small), and only the
    newest snapshot (and the horizon's) stay: bytes <= the retained log + 2 snapshots."""
    big = {"blob": "b" * 500_000}
    with evstate.open(tmp_path, save_interval_ms=100) as store:
        for i in range(16):
            store.set("s", "big", {**big, "i": i})
            time.sleep(0.15)
        stats = store.stats()
    sealed = sorted(tmp_path.glob("*.log"))[:-1]
    assert all(p.stat().st_size >= 1 << 20 for p in sealed)  # no tiny segment per snapshot
    assert stats["snapshots"] <= 2
    bound = stats["log_bytes"] + 2 * 600_000 + 64 * 1024
    assert _bytes_on_disk(tmp_path) <= bound
