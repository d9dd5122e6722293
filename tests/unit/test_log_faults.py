"""The log under failing I/O: a failed fsync fails closed; a failed write loses nothing."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest

import evstate
from evstate.backends.file.diskio import DiskIO
from evstate.config import Config


class FlakyIO(DiskIO):
    """DiskIO that fails the next fsync or write when told to."""

    def __init__(self) -> None:
        self.fail_fsync = False
        self.fail_write: int | None = None  # errno for the next write
        self.partial = False  # write half the bytes before failing
        self.fsyncs = 0

    def fsync(self, fd: int) -> None:
        if self.fail_fsync:
            raise OSError(errno.EIO, "injected EIO on fsync")
        self.fsyncs += 1
        super().fsync(fd)

    def write_all(self, fd: int, data: bytes) -> None:
        if self.fail_write is not None:
            code, self.fail_write = self.fail_write, None
            if self.partial:
                super().write_all(fd, data[: len(data) // 2])
            raise OSError(code, "injected write failure")
        super().write_all(fd, data)


def _open(path: Path, io: DiskIO, **options: object) -> evstate.Store:
    return evstate.Store(Config().replace(file_path=str(path), **options), io=io)


def test_failed_fsync_fails_closed(tmp_path: Path) -> None:
    io = FlakyIO()
    store = _open(tmp_path, io)
    store.set("s", "ok", 1)
    io.fail_fsync = True
    with pytest.raises(evstate.StoreFailedError):
        store.set("s", "lost", 2)
    io.fail_fsync = False  # even if the disk "recovers", we never retry-and-acknowledge
    with pytest.raises(evstate.StoreFailedError):
        store.set("s", "after", 3)
    with pytest.raises(evstate.StoreFailedError):
        store.flush()
    assert store.get("s", "ok") == 1  # reads keep working
    store.close()
    with evstate.open(tmp_path) as reopened:
        assert reopened.get("s", "ok") == 1
        assert reopened.get("s", "after") is None
        reopened.set("s", "after", 3)  # a reopen recovers from the log


def test_failed_fsync_fails_every_waiting_writer(tmp_path: Path) -> None:
    io = FlakyIO()
    store = _open(tmp_path, io)
    io.fail_fsync = True
    failures: list[BaseException] = []

    def write(i: int) -> None:
        try:
            store.set("s", str(i), i)
        except evstate.StoreFailedError as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(failures) == 8
    store.close()


def test_enospc_fails_the_write_and_keeps_the_store_usable(tmp_path: Path) -> None:
    io = FlakyIO()
    store = _open(tmp_path, io)
    store.set("s", "a", 1)
    io.partial = True
    io.fail_write = errno.ENOSPC
    with pytest.raises(evstate.StorageError) as info:
        store.set("s", "b", 2)
    assert not isinstance(info.value, evstate.StoreFailedError)
    assert store.get("s", "b") is None
    revision = store.revision
    store.set("s", "c", 3)  # space is back: writes continue, gap-free
    assert store.revision == revision + 1
    store.close()
    with evstate.open(tmp_path) as reopened:
        assert reopened.list("s") == {"a": 1, "c": 3}
        assert reopened.recovery_notes == []  # the partial write was cut back


def test_always_mode_shares_fsyncs_across_threads(tmp_path: Path) -> None:
    io = FlakyIO()
    store = _open(tmp_path, io)
    before = io.fsyncs
    barrier = threading.Barrier(16)

    def write(i: int) -> None:
        barrier.wait()
        for n in range(50):
            store.set("s", f"{i}-{n}", n)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.revision == 800
    assert io.fsyncs - before < 800  # group commit: fewer fsyncs than writes
    store.close()


def test_interval_mode_syncs_in_the_background(tmp_path: Path) -> None:
    io = FlakyIO()
    store = _open(tmp_path, io, fsync="interval", fsync_interval_ms=10)
    store.set("s", "k", 1)
    deadline = 200
    while io.fsyncs < 2 and deadline:  # header fsync, then the background one
        threading.Event().wait(0.01)
        deadline -= 1
    assert io.fsyncs >= 2
    store.close()


def test_never_mode_fsyncs_only_on_flush_and_close(tmp_path: Path) -> None:
    io = FlakyIO()
    store = _open(tmp_path, io, fsync="never")
    after_open = io.fsyncs
    for i in range(20):
        store.set("s", str(i), i)
    assert io.fsyncs == after_open
    store.flush()
    assert io.fsyncs == after_open + 1
    store.close()
