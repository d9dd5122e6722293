"""The fault-injecting file layer itself: its durability model and its faults, as documented
in evstate/testing.py (what the other fault tests rely on)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from evstate.testing import FaultyIO, PowerCutError, file_kind


def _write(io: FaultyIO, path: Path, data: bytes, *, sync: bool, sync_dir: bool) -> None:
    fd = io.create_exclusive(str(path))
    io.write_all(fd, data)
    if sync:
        io.fsync(fd)
    io.close(fd)
    if sync_dir:
        io.fsync_dir(str(path.parent))


def test_unsynced_bytes_and_names_are_forgotten(tmp_path: Path) -> None:
    io = FaultyIO()
    _write(io, tmp_path / "durable", b"abc", sync=True, sync_dir=True)
    _write(io, tmp_path / "data-only", b"xyz", sync=True, sync_dir=False)
    fd = io.open_append(str(tmp_path / "durable"))
    io.write_all(fd, b"-unsynced")
    assert (tmp_path / "durable").read_bytes() == b"abc-unsynced"  # readers see the cache
    io.power_cut()
    io.close(fd)
    assert (tmp_path / "durable").read_bytes() == b"abc"
    assert not (tmp_path / "data-only").exists()  # its name never reached the disk


@pytest.mark.parametrize("mode", ["prefix", "zeros", "process"])
def test_cut_modes_decide_what_happens_to_the_unsynced_tail(tmp_path: Path, mode: str) -> None:
    io = FaultyIO(seed=3)
    path = tmp_path / "f"
    _write(io, path, b"head", sync=True, sync_dir=True)
    fd = io.open_append(str(path))
    io.write_all(fd, b"0123456789")
    io.power_cut(mode)  # type: ignore[arg-type]
    io.close(fd)
    data = path.read_bytes()
    if mode == "prefix":
        assert data.startswith(b"head") and b"head0123456789".startswith(data)
    elif mode == "zeros":
        assert data == b"head" + bytes(10)
    else:
        assert data == b"head0123456789"


def test_renames_and_unlinks_need_a_directory_fsync(tmp_path: Path) -> None:
    io = FaultyIO()
    _write(io, tmp_path / "target", b"old", sync=True, sync_dir=True)
    _write(io, tmp_path / "gone", b"still here", sync=True, sync_dir=True)
    _write(io, tmp_path / "tmp", b"new", sync=True, sync_dir=True)
    io.rename(str(tmp_path / "tmp"), str(tmp_path / "target"))
    io.remove(str(tmp_path / "gone"))
    assert (tmp_path / "target").read_bytes() == b"new"
    io.power_cut()
    assert (tmp_path / "target").read_bytes() == b"old"
    assert (tmp_path / "tmp").read_bytes() == b"new"
    assert (tmp_path / "gone").read_bytes() == b"still here"


def test_a_directory_fsync_makes_every_entry_change_durable(tmp_path: Path) -> None:
    io = FaultyIO()
    _write(io, tmp_path / "a", b"1", sync=True, sync_dir=False)
    _write(io, tmp_path / "b", b"2", sync=True, sync_dir=True)  # also makes "a" durable
    io.power_cut()
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


def test_a_failed_fsync_loses_its_bytes_for_good(tmp_path: Path) -> None:
    """fsyncgate: a later successful fsync does not bring the dropped pages back."""
    io = FaultyIO()
    path = tmp_path / "f"
    _write(io, path, b"ok|", sync=True, sync_dir=True)
    fd = io.open_append(str(path))
    io.write_all(fd, b"lost|")
    io.fail_at("before_fsync")
    with pytest.raises(OSError) as info:
        io.fsync(fd)
    assert info.value.errno == errno.EIO
    io.write_all(fd, b"later")
    io.fsync(fd)
    io.power_cut()
    io.close(fd)
    assert path.read_bytes() == b"ok|" + bytes(5) + b"later"


def test_a_full_disk_writes_what_fits_then_raises_enospc(tmp_path: Path) -> None:
    io = FaultyIO()
    path = tmp_path / "f"
    _write(io, path, b"", sync=True, sync_dir=True)
    fd = io.open_append(str(path))
    io.fill_disk(4)
    with pytest.raises(OSError) as info:
        io.write_all(fd, b"123456")
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"1234"
    io.truncate(fd, 0)  # gives the space back
    io.write_all(fd, b"abcd")
    with pytest.raises(OSError):
        io.write_all(fd, b"e")
    io.free_space()
    io.write_all(fd, b"e")
    io.close(fd)
    assert path.read_bytes() == b"abcde"


def test_faults_fire_at_the_chosen_pass_of_a_point_and_kind(tmp_path: Path) -> None:
    io = FaultyIO(record=True)
    fault = io.fail_at("before_append", hit=2, times=2, error=errno.ENOSPC)
    seg = tmp_path / "00000000000000000001.log"
    _write(io, tmp_path / "x.snap.tmp", b"not a segment", sync=False, sync_dir=False)
    fd = io.create_exclusive(str(seg))
    io.write_all(fd, b"1")
    for _ in range(2):
        with pytest.raises(OSError):
            io.write_all(fd, b"2")
    io.write_all(fd, b"3")  # spent after firing twice
    io.close(fd)
    assert fault.fired == 2 and fault.spent
    assert io.hits[("before_write", "segment")] == 4
    assert ("before_write", "snapshot") in io.trace
    with pytest.raises(ValueError):
        io.inject("no_such_point")


def test_a_torn_write_keeps_a_prefix_then_fails(tmp_path: Path) -> None:
    io = FaultyIO()
    seg = tmp_path / "00000000000000000001.log"
    fd = io.create_exclusive(str(seg))
    io.fail_at("before_append", tear=0.5)
    with pytest.raises(OSError):
        io.write_all(fd, b"abcdefgh")
    io.close(fd)
    assert seg.read_bytes() == b"abcd"


def test_after_a_cut_every_call_fails_until_restart(tmp_path: Path) -> None:
    io = FaultyIO()
    _write(io, tmp_path / "f", b"x", sync=True, sync_dir=True)
    fd = io.open_append(str(tmp_path / "f"))
    io.crash_at("segment_roll")
    with pytest.raises(PowerCutError):
        io.failpoint("segment_roll")
    assert not io.powered
    for call in (
        lambda: io.write_all(fd, b"y"),
        lambda: io.fsync(fd),
        lambda: io.listdir(str(tmp_path)),
        lambda: io.read_file(str(tmp_path / "f")),
    ):
        with pytest.raises(PowerCutError):
            call()
    io.close(fd)  # closing still works: it writes nothing
    io.restart()
    assert io.read_file(str(tmp_path / "f")) == b"x"


def test_file_kinds() -> None:
    assert file_kind("/d/00000000000000000001.log") == "segment"
    assert file_kind("00000000000000000009.snap.tmp") == "snapshot"
    assert file_kind("triggers.cbor.tmp") == "cursor"
    assert file_kind("LOCK") == "other"
