"""The file-system layer: every byte the file store writes goes through :class:`DiskIO`.

That includes the log, snapshots, cursor files, the ``LOCK`` file and restores; a follower
writes only its own cursor files, through the same layer.

Keeping all I/O behind one small object lets tests substitute a fault-injecting version
(forget unsynced bytes, fail at named points) without touching the engine.
Durability rule (docs/reliability.md): a file's data is durable after :meth:`fsync`; a
file's *name* (create, rename, unlink) is durable after :meth:`fsync_dir` of its directory.
Nothing is ever written through a symbolic link: files are created exclusively
(``O_EXCL``), opened for writing with ``O_NOFOLLOW``, and replaced by rename.
"""

from __future__ import annotations

import os
import time

from evstate.timings import FSYNC_SECONDS

__all__ = ["FAILPOINTS", "DiskIO"]

# Named points the engine announces with :meth:`DiskIO.failpoint` (evstate.testing.FaultyIO
# can fail or cut the power at each; docs/reliability.md):
FAILPOINTS = (
    "segment_roll",  # log.py: sealing the active segment, before its fsync and the new one
    "snapshot_write",  # snapshot.py: the segment is sealed, the snapshot file not yet begun
    "cursor_save",  # triggers.py: the log is flushed, the cursor file not yet written
    "compaction",  # timeline.py: old segments deleted (durably), old snapshots not yet
)


class DiskIO:
    """Thin wrapper over ``os`` calls; thread-safe (holds no state)."""

    def open_append(self, path: str) -> int:
        """Open an existing file for appending (never through a symbolic link)."""
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)

    def create_exclusive(self, path: str) -> int:
        """Create a new file (fails if it exists) open for appending."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        return os.open(path, flags, 0o644)

    def write_all(self, fd: int, data: bytes) -> None:
        """Write every byte of ``data`` (retrying short writes); raises OSError."""
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def fsync(self, fd: int) -> None:
        """Make the file's data durable (``fdatasync``); raises OSError."""
        started = time.perf_counter()
        os.fdatasync(fd)
        FSYNC_SECONDS.observe(time.perf_counter() - started)  # evstate_fsync_seconds

    def fsync_dir(self, directory: str) -> None:
        """Make the directory's entries (creates, renames, unlinks) durable."""
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def truncate(self, fd: int, size: int) -> None:
        """Cut the file to ``size`` bytes."""
        os.ftruncate(fd, size)

    def close(self, fd: int) -> None:
        """Close a descriptor."""
        os.close(fd)

    def read_file(self, path: str) -> bytes:
        """Return a whole file's bytes."""
        with open(path, "rb") as f:
            return f.read()

    def listdir(self, directory: str) -> list[str]:
        """Names in ``directory``."""
        return os.listdir(directory)

    def rename(self, source: str, target: str) -> None:
        """Atomically replace ``target`` with ``source`` (call :meth:`fsync_dir` after)."""
        os.replace(source, target)

    def remove(self, path: str) -> None:
        """Unlink a file (call :meth:`fsync_dir` to make it durable)."""
        os.unlink(path)

    def failpoint(self, name: str) -> None:
        """Mark the named point ``name`` (one of :data:`FAILPOINTS`); a no-op here.

        A fault-injecting subclass may raise ``OSError`` from it; the engine only calls it
        where an I/O error is already handled.
        """

    def makedirs(self, path: str) -> None:
        """Create ``path`` and its missing parents (an existing directory is fine)."""
        os.makedirs(path, exist_ok=True)

    def exists(self, path: str) -> bool:
        """True if ``path`` names anything (a dangling link included)."""
        return os.path.lexists(path)

    def replace_file(self, path: str, data: bytes) -> None:
        """Atomically and durably make the file ``path`` hold ``data``.

        Writes ``<path>.tmp``, fsyncs it, renames it over ``path`` and fsyncs the directory,
        so a crash leaves the old file or the new one, whole. Never writes through a link
        (the ``.tmp`` is created exclusively; a rename replaces a link, not its target).

        Raises:
            OSError: the old file (if any) is unchanged.
        """
        tmp = path + ".tmp"
        if self.exists(tmp):
            self.remove(tmp)
        fd = self.create_exclusive(tmp)
        try:
            self.write_all(fd, data)
            self.fsync(fd)
        finally:
            self.close(fd)
        self.rename(tmp, path)
        self.fsync_dir(os.path.dirname(path) or ".")

    def write_note(self, path: str, text: str) -> None:
        """Best effort: make ``path`` hold ``text`` (no fsync), never through a link.

        For informational files (the pid in ``LOCK``). Raises OSError, e.g. ``ELOOP`` when
        ``path`` is a symbolic link or ``EISDIR`` when it is a directory.
        """
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, text.encode(), 0)
        finally:
            os.close(fd)

    def truncate_path(self, path: str, size: int) -> None:
        """Cut the file at ``path`` to ``size`` bytes and make that durable."""
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
