"""``restore_to``: a past state written as a new, independent store directory.

The new directory holds one snapshot at the restored revision (so its log continues the
numbering) and opens like any file store. Every store kind restores through this one
writer: a redis store's or a memory store's past state becomes a file store too.
"""

from __future__ import annotations

import os

from evstate.backends.file.diskio import DiskIO
from evstate.backends.file.snapshot import write_snapshot
from evstate.core.replay import Scopes
from evstate.errors import StorageError

__all__ = ["DIRECTORY_RESTORE", "DirectoryRestore"]


class DirectoryRestore:
    """The :class:`~evstate.core.audit.RestoreWriter` of every store kind."""

    def __init__(self, io: DiskIO | None = None) -> None:
        self.io = io or DiskIO()

    def check_target(self, path: str | os.PathLike[str]) -> str:
        """The absolute path of a directory a restore may write: missing, or empty.

        Raises:
            StorageError: ``path`` exists and is not an empty directory.
        """
        target = os.path.abspath(os.fspath(path))
        if os.path.lexists(target) and (not os.path.isdir(target) or os.listdir(target)):
            raise StorageError(f"{target} exists and is not an empty directory")
        return target

    def write(self, target: str, revision: int, timestamp: int, scopes: Scopes) -> str:
        """Make ``target`` a new store holding ``scopes`` at ``revision``; durable on return.

        Raises:
            StorageError: it cannot be written.
        """
        try:
            self.io.makedirs(target)
            write_snapshot(target, revision, timestamp, scopes, self.io, {})
            self.io.fsync_dir(os.path.dirname(target))
        except OSError as exc:
            raise StorageError(f"cannot write {target}: {exc}") from exc
        return target


DIRECTORY_RESTORE = DirectoryRestore()
