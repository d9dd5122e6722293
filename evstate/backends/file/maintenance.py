"""The owner's upkeep of a store directory: loading, writing and pruning snapshots.

Only the process holding the directory's lock calls these; readers (followers) never
write or delete anything here.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable
from typing import Any

import cbor2

from evstate.backends.file.cursors import read_cursor_file
from evstate.backends.file.diskio import DiskIO
from evstate.backends.file.layout import HEAD_FILE, HEAD_FILE_VERSION, TRIGGERS_FILE, snapshot_name
from evstate.backends.file.log import SegmentLog
from evstate.backends.file.segment import frame_record, unframe_single
from evstate.backends.file.snapshot import (
    Snapshot,
    SnapshotError,
    list_snapshots,
    read_snapshot,
    write_snapshot,
)
from evstate.core.replay import Scopes
from evstate.errors import StorageError

__all__ = [
    "compact_directory",
    "newest_snapshot_bytes",
    "load_newest_snapshot",
    "read_head",
    "save_snapshot",
    "write_head",
]


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


def newest_snapshot_bytes(directory: str, io: DiskIO, revision: int) -> int:
    """The size of the snapshot file of ``revision`` (0 when there is none)."""
    if revision == 0:
        return 0
    try:
        return os.path.getsize(os.path.join(directory, snapshot_name(revision)))
    except OSError:
        return 0


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
    """Drop history at or below ``cutoff`` where a snapshot covers it, and spare snapshots.

    The newest snapshot at or before ``cutoff`` becomes the base: every sealed segment
    wholly at or below it is deleted. Of the snapshots, two stay: the newest (where the next
    open starts) and, once segments were deleted, the oldest one the remaining log continues
    from (the horizon, where ``at()`` of the oldest retained revision starts); the rest are
    deleted. Segments go first and snapshots last, each durably, so a crash between the two
    leaves at most an orphan snapshot, which readers skip. ``before_delete()`` runs once
    before the first deletion (the owner drops its index). Returns ``base``,
    ``segments_deleted`` and ``snapshots_deleted``.

    Raises:
        StorageError: a deletion failed; what is left still opens to the same state.
    """
    snapshots = list_snapshots(directory, io)
    base = max((s.revision for s in snapshots if s.revision <= cutoff), default=None)
    segments = log.segments()
    doomed = (
        [p for (_, p), (nxt, _) in itertools.pairwise(segments) if nxt - 1 <= base]
        if base is not None
        else []
    )
    floor = segments[len(doomed)][0] - 1 if len(segments) > len(doomed) else 0
    keep = {snapshots[-1].revision} if snapshots else set()
    usable = [s.revision for s in snapshots if s.revision >= floor]
    if floor > 0 and usable:
        keep.add(usable[0])
    spare = [s for s in snapshots if s.revision not in keep]
    if not doomed and not spare:
        return {"base": base, "segments_deleted": 0, "snapshots_deleted": 0}
    before_delete()
    try:
        deleted = log.delete_segments_through(base) if base is not None else []
        io.failpoint("compaction")
        for snap in spare:
            io.remove(snap.path)
        if spare:
            io.fsync_dir(directory)
    except OSError as exc:
        raise StorageError(f"compaction failed: {exc}") from exc
    return {"base": base, "segments_deleted": len(deleted), "snapshots_deleted": len(spare)}


def write_head(directory: str, io: DiskIO, revision: int) -> None:
    """Record ``revision`` (durable now) as a head the log must reach at the next open.

    Raises:
        OSError: it could not be written (the previous record stays whole).
    """
    body = cbor2.dumps({"version": HEAD_FILE_VERSION, "revision": revision})
    io.replace_file(os.path.join(directory, HEAD_FILE), frame_record(body))


def read_head(directory: str, io: DiskIO) -> tuple[int, str]:
    """The highest revision the store is known to have reached, and where that is recorded.

    The head written at the last clean close (``HEAD``) and the trigger cursors of
    ``triggers.cbor`` (a cursor never passes the durable head) are lower bounds of the
    head; an unreadable file counts as no record (0).
    """
    best, where = 0, ""
    try:
        data = io.read_file(os.path.join(directory, HEAD_FILE))
        body = cbor2.loads(unframe_single(data))
        revision = body.get("revision") if isinstance(body, dict) else None
        if type(revision) is int and revision > best:
            best, where = revision, f"{HEAD_FILE} (the last clean close)"
    except FileNotFoundError:
        pass
    except Exception:  # a damaged record is no record: never a reason to refuse
        pass
    try:
        found = read_cursor_file(io, os.path.join(directory, TRIGGERS_FILE))
    except (OSError, ValueError):
        found = None
    if found is not None:
        for name, entry in found[0].items():
            if entry.cursor > best:
                best, where = entry.cursor, f"{TRIGGERS_FILE} (trigger {name!r})"
    return best, where
