"""The writer's lock of a store directory: one owner at a time.

The lock is an exclusive ``flock`` on the store directory itself (its own descriptor), not
on a file in it: a stray ``rm`` can unlink a file from under its owner and let a second
writer in, but it cannot unlink the directory a process has open. The kernel drops the lock
when the owner exits or dies, so a crashed owner never blocks the next open. ``LOCK`` holds
the owner's pid, for people and for :meth:`evstate.Follower.stats`; it is informational
only and never written through a link.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os

from evstate.backends.file.diskio import DiskIO
from evstate.backends.file.layout import LOCK_FILE
from evstate.errors import StorageError, StoreLockedError

__all__ = ["DirectoryLock", "owner_pid"]

log = logging.getLogger("evstate")


def _read_pid(directory: str) -> str:
    try:
        fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return ""
    try:
        return os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        return ""
    finally:
        os.close(fd)


class DirectoryLock:
    """An exclusive ``flock`` on a store directory (see the module doc)."""

    def __init__(self, directory: str, io: DiskIO) -> None:
        """Take the lock of ``directory``.

        Raises:
            StoreLockedError: another process (or Store) holds it.
            StorageError: the directory cannot be opened.
        """
        try:
            self.fd: int | None = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise StorageError(f"cannot open store directory {directory}: {exc}") from exc
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            owner = _read_pid(directory)
            raise StoreLockedError(
                f"{directory} is open for writing by another process or Store"
                + (f" (pid {owner})" if owner.isdigit() else "")
            ) from None
        except OSError as exc:
            os.close(self.fd)
            self.fd = None
            raise StorageError(f"cannot lock store directory {directory}: {exc}") from exc
        try:
            io.write_note(os.path.join(directory, LOCK_FILE), f"{os.getpid()}\n")
        except OSError as exc:  # informational only: never a reason to refuse the open
            log.warning("evstate: could not write the pid to %s/%s: %s", directory, LOCK_FILE, exc)

    def release(self) -> None:
        """Drop the lock. Idempotent."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def owner_pid(directory: str) -> int | None:
    """The pid holding ``directory``'s writer lock, or ``None``.

    Read from ``/proc/locks`` (Linux), so the lock itself is never touched: taking it, even
    shared and for an instant, could make the owner's own open fail.
    """
    try:
        st = os.stat(directory)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 11554 fe:00:2148236 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            try:
                return int(fields[4])
            except ValueError:
                return None
    return None
