"""The owner's upkeep of a store directory: loading, writing and pruning snapshots.

Only the process holding the directory's lock calls these; readers (followers) never
write or delete anything here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

from evstate.backends.file.diskio import DiskIO
from evstate.backends.file.layout import snapshot_name
from evstate.backends.file.log import SegmentLog
from evstate.backends.file.snapshot import (
    Snapshot,
    SnapshotError,
    list_snapshots,
    read_snapshot,
    write_snapshot,
)
from evstate.core.replay import Scopes
from evstate.errors import StorageError

__all__ = ["compact_directory", "load_newest_snapshot", "save_snapshot"]


def load_newest_snapshot(directory: str, io: DiskIO, note: Callable[[str], None]) -> Snapshot:
    """The newest valid snapshot; an empty one at revision 0 if there is none.

    Removes leftover ``.snap.tmp`` files. A bad snapshot is reported through ``note`` and
    the next older one is tried.

    Raises:
        StorageError: the directory cannot be read.
    """
    try:
        for name in io.listdir(directory):
            if name.endswith(".snap.tmp"):
                io.remove(os.path.join(directory, name))
                note(f"removed unfinished snapshot {name}")
        snapshots = list_snapshots(directory, io)
    except OSError as exc:
        raise StorageError(f"cannot read store directory {directory}: {exc}") from exc
    for info in reversed(snapshots):
        try:
            return read_snapshot(info, io)
        except SnapshotError as exc:
            note(f"ignored bad snapshot ({exc}); falling back to an older state")
    return Snapshot(0, 0, {}, {})


def save_snapshot(
    directory: str,
    io: DiskIO,
    revision: int,
    timestamp: int,
    scopes: Scopes,
    cursors: dict[str, int],
) -> str:
    """Write the snapshot of ``revision`` durably; returns its path.

    Raises:
        StorageError: it could not be written (a full disk, a failed fsync); the partial
            ``.tmp`` file is removed (best effort, so it holds no space) and is never used.
    """
    try:
        return write_snapshot(directory, revision, timestamp, scopes, io, cursors).path
    except OSError as exc:
        tmp = os.path.join(directory, snapshot_name(revision) + ".tmp")
        with contextlib.suppress(OSError):
            if io.exists(tmp):
                io.remove(tmp)
        raise StorageError(f"could not write the snapshot of revision {revision}: {exc}") from exc


def compact_directory(
    directory: str,
    io: DiskIO,
    log: SegmentLog,
    cutoff: int,
    before_delete: Callable[[], None],
) -> dict[str, Any]:
    """Drop history at or below ``cutoff`` where a snapshot covers it.

    The newest snapshot at or before ``cutoff`` becomes the base; older snapshots and every
    sealed segment wholly at or below the base are deleted (durably): segments first, so a
    crash between the two leaves an orphan snapshot, which readers skip. ``before_delete()``
    runs once before the first deletion (the owner drops its index). Returns ``base``,
    ``segments_deleted`` and ``snapshots_deleted``.

    Raises:
        StorageError: a deletion failed; what is left still opens to the same state.
    """
    snapshots = list_snapshots(directory, io)
    base = max((s.revision for s in snapshots if s.revision <= cutoff), default=None)
    if base is None:
        return {"base": None, "segments_deleted": 0, "snapshots_deleted": 0}
    old = [s for s in snapshots if s.revision < base]
    segments = log.segments()
    if not old and not (len(segments) > 1 and segments[1][0] - 1 <= base):
        return {"base": base, "segments_deleted": 0, "snapshots_deleted": 0}
    before_delete()
    try:
        deleted = log.delete_segments_through(base)
        io.failpoint("compaction")
        for snap in old:
            io.remove(snap.path)
        if old:
            io.fsync_dir(directory)
    except OSError as exc:
        raise StorageError(f"compaction failed: {exc}") from exc
    return {"base": base, "segments_deleted": len(deleted), "snapshots_deleted": len(old)}
