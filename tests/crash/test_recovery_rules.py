"""One test per recovery rule of docs/format.md section 4, named after the rule."""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import pytest

import evstate
from evstate.backends.file.segment import HEADER_SIZE, segment_name


def _fill(path: Path, n: int = 5, **options: object) -> None:
    """Write ``n`` events, then leave the directory as a writer that crashed would.

    A clean close records the head it reached (``HEAD``); a crashed writer leaves none, and
    only a crash leaves a torn tail behind, which is what these rules are about.
    """
    with evstate.open(path, **options) as store:
        for i in range(n):
            store.set("s", f"k{i}", {"i": i, "pad": "x" * 20})
    (path / "HEAD").unlink()


def _segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.log"))


def _record_offsets(seg: Path) -> list[int]:
    data = seg.read_bytes()
    pos, offsets = HEADER_SIZE, []
    while pos < len(data):
        (length,) = struct.unpack_from("<I", data, pos)
        offsets.append(pos)
        pos += 8 + length
    return offsets


def test_truncated_trailing_record_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _fill(tmp_path, 5)
    seg = _segments(tmp_path)[-1]
    size = seg.stat().st_size
    with open(seg, "r+b") as f:
        f.truncate(size - 7)  # cut into the last record
    with caplog.at_level(logging.WARNING, logger="evstate"):
        store = evstate.open(tmp_path)
    with store:
        assert store.revision == 4
        assert store.get("s", "k3") == {"i": 3, "pad": "x" * 20}
        assert store.get("s", "k4") is None
        assert any("dropped" in note for note in store.recovery_notes)
        # the store keeps working and the next revision follows on
        store.set("s", "k4", 4)
    assert "truncated torn tail" in caplog.text
    with evstate.open(tmp_path) as store:
        assert store.revision == 5 and store.get("s", "k4") == 4


def test_partial_record_header_at_tail_is_ignored(tmp_path: Path) -> None:
    _fill(tmp_path, 3)
    seg = _segments(tmp_path)[-1]
    with open(seg, "ab") as f:
        f.write(b"\x10\x00\x00")  # 3 bytes of a frame header
    with evstate.open(tmp_path) as store:
        assert store.revision == 3
    assert seg.stat().st_size == _record_offsets(seg)[-1] + (
        seg.stat().st_size - _record_offsets(seg)[-1]
    )


def test_bad_checksum_in_last_record_is_torn_tail(tmp_path: Path) -> None:
    _fill(tmp_path, 3)
    seg = _segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF
    seg.write_bytes(bytes(data))
    with evstate.open(tmp_path) as store:
        assert store.revision == 2
        assert store.get("s", "k2") is None


def test_bad_checksum_mid_segment_raises(tmp_path: Path) -> None:
    _fill(tmp_path, 5)
    seg = _segments(tmp_path)[-1]
    offset = _record_offsets(seg)[2]
    data = bytearray(seg.read_bytes())
    data[offset + 12] ^= 0xFF  # a payload byte of record 3
    seg.write_bytes(bytes(data))
    before = seg.read_bytes()
    with pytest.raises(evstate.CorruptionError) as info:
        evstate.open(tmp_path)
    assert info.value.path == str(seg)
    assert info.value.offset == offset
    assert seg.read_bytes() == before, "a corrupt log must not be repaired silently"
    # the failed open released the directory lock
    with pytest.raises(evstate.CorruptionError):
        evstate.open(tmp_path)


def test_bad_length_mid_segment_raises(tmp_path: Path) -> None:
    _fill(tmp_path, 5)
    seg = _segments(tmp_path)[-1]
    offset = _record_offsets(seg)[1]
    data = bytearray(seg.read_bytes())
    data[offset : offset + 4] = struct.pack("<I", 10_000_000)
    seg.write_bytes(bytes(data))
    with pytest.raises(evstate.CorruptionError) as info:
        evstate.open(tmp_path)
    assert info.value.offset == offset


def test_zero_filled_tail_is_ignored(tmp_path: Path) -> None:
    _fill(tmp_path, 4)
    seg = _segments(tmp_path)[-1]
    with open(seg, "ab") as f:
        f.write(b"\x00" * 4096)  # a preallocated or never-written tail after a crash
    with evstate.open(tmp_path) as store:
        assert store.revision == 4
        assert any("zero-filled" in note for note in store.recovery_notes)
    assert seg.stat().st_size == (seg.stat().st_size)  # reopened cleanly
    with evstate.open(tmp_path) as store:
        assert store.recovery_notes == []


def test_zeroed_record_followed_by_valid_record_raises(tmp_path: Path) -> None:
    _fill(tmp_path, 5)
    seg = _segments(tmp_path)[-1]
    offsets = _record_offsets(seg)
    data = bytearray(seg.read_bytes())
    data[offsets[1] : offsets[2]] = b"\x00" * (offsets[2] - offsets[1])
    seg.write_bytes(bytes(data))
    with pytest.raises(evstate.CorruptionError):
        evstate.open(tmp_path)


def test_empty_segment_is_removed(tmp_path: Path) -> None:
    _fill(tmp_path, 3)
    empty = tmp_path / segment_name(4)
    empty.write_bytes(b"")  # a crash between creating a segment and writing its header
    with evstate.open(tmp_path) as store:
        assert store.revision == 3
        assert not empty.exists() or empty.stat().st_size > 0
        store.set("s", "after", 1)
    with evstate.open(tmp_path) as store:
        assert store.get("s", "after") == 1


def test_partial_segment_header_is_removed(tmp_path: Path) -> None:
    _fill(tmp_path, 2)
    (tmp_path / segment_name(3)).write_bytes(b"EVSG\x01")
    with evstate.open(tmp_path) as store:
        assert store.revision == 2


def test_empty_segment_before_the_last_raises(tmp_path: Path) -> None:
    _fill(tmp_path, 200, segment_size_bytes=4096)
    segs = _segments(tmp_path)
    assert len(segs) >= 3
    segs[1].write_bytes(b"")
    with pytest.raises(evstate.CorruptionError):
        evstate.open(tmp_path)


def test_damage_in_a_closed_segment_raises(tmp_path: Path) -> None:
    _fill(tmp_path, 200, segment_size_bytes=4096)
    first = _segments(tmp_path)[0]
    with open(first, "r+b") as f:
        f.truncate(first.stat().st_size - 3)  # a torn tail is only legal in the newest
    with pytest.raises(evstate.CorruptionError) as info:
        evstate.open(tmp_path)
    assert info.value.path == str(first)


def test_missing_segment_is_a_revision_gap(tmp_path: Path) -> None:
    _fill(tmp_path, 200, segment_size_bytes=4096)
    segs = _segments(tmp_path)
    os.unlink(segs[1])
    with pytest.raises(evstate.CorruptionError, match="gap"):
        evstate.open(tmp_path)


def test_bad_segment_header_raises(tmp_path: Path) -> None:
    _fill(tmp_path, 3)
    seg = _segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[0:4] = b"XXXX"
    seg.write_bytes(bytes(data))
    with pytest.raises(evstate.CorruptionError, match="header"):
        evstate.open(tmp_path)


def test_segments_roll_and_replay_in_order(tmp_path: Path) -> None:
    _fill(tmp_path, 200, segment_size_bytes=4096)
    segs = _segments(tmp_path)
    assert len(segs) > 3
    names = [p.name for p in segs]
    assert names == sorted(names)
    with evstate.open(tmp_path, segment_size_bytes=4096) as store:
        assert store.revision == 200
        assert len(store.list("s")) == 200


def test_unrelated_files_are_ignored(tmp_path: Path) -> None:
    _fill(tmp_path, 2)
    (tmp_path / "notes.txt").write_text("hello")
    with evstate.open(tmp_path) as store:
        assert store.revision == 2
