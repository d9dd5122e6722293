"""Snapshot files: the whole state at one revision, written atomically.

Format: see docs/format.md section 5. A snapshot is a header, then framed chunks (the record
framing of docs/format.md section 3), then a framed trailer that counts what came before: a file
without a valid trailer is incomplete and never used. Chunks keep every encode and decode
step short, so a snapshot written in the background never holds the GIL for long.

Written as ``<rev>.snap.tmp``: write, fsync, rename to ``<rev>.snap``, fsync the directory.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import cbor2

from evstate.backends.file.diskio import DiskIO
from evstate.backends.file.layout import (
    CHUNK_KEYS,
    SNAPSHOT_HEADER,
    SNAPSHOT_MAGIC,
    SNAPSHOT_NAME_RE,
    SNAPSHOT_VERSION,
    TRAILER_TAG,
    snapshot_name,
)
from evstate.backends.file.segment import frame_record, scan_segment
from evstate.core.replay import Scopes

__all__ = [
    "Snapshot",
    "SnapshotError",
    "SnapshotInfo",
    "iter_snapshot_chunks",
    "list_snapshots",
    "read_snapshot",
    "read_snapshot_header",
    "snapshot_name",
    "write_snapshot",
]


class Snapshot(NamedTuple):
    """A snapshot's content: the state at ``revision`` and the trigger cursors then."""

    revision: int
    timestamp: int
    scopes: Scopes
    cursors: dict[str, int]


class SnapshotError(ValueError):
    """A snapshot file is missing, truncated, or fails a checksum."""


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A snapshot file on disk: the revision and the event timestamp it holds the state of."""

    revision: int
    path: str


def _encode_header(revision: int, timestamp: int) -> bytes:
    fields = (SNAPSHOT_MAGIC, SNAPSHOT_VERSION, 0, revision, timestamp)
    crc = zlib.crc32(SNAPSHOT_HEADER.pack(*fields, 0, 0)[:24])
    return SNAPSHOT_HEADER.pack(*fields, crc, 0)


def _chunks(scopes: Scopes) -> Iterator[list[object]]:
    """``[scope, [key, value, key, value, ...]]`` pieces of at most CHUNK_KEYS keys."""
    for scope, keys in scopes.items():
        items = list(keys.items())
        for start in range(0, len(items), CHUNK_KEYS):
            flat: list[object] = []
            for key, value in items[start : start + CHUNK_KEYS]:
                flat.append(key)
                flat.append(value)
            yield [scope, flat]


def write_snapshot(
    directory: str,
    revision: int,
    timestamp: int,
    scopes: Scopes,
    io: DiskIO,
    cursors: dict[str, int] | None = None,
) -> SnapshotInfo:
    """Write the snapshot of ``revision`` atomically and durably; returns where it is.

    ``scopes`` must not change while this runs (pass a copy). Raises OSError on I/O
    failure; a failed write leaves only a ``.tmp`` file, which recovery ignores.
    """
    io.failpoint("snapshot_write")
    final = os.path.join(directory, snapshot_name(revision))
    tmp = final + ".tmp"
    if os.path.exists(tmp):
        io.remove(tmp)
    fd = io.create_exclusive(tmp)
    try:
        buffer = bytearray(_encode_header(revision, timestamp))
        chunks = keys = 0
        for chunk in _chunks(scopes):
            buffer += frame_record(cbor2.dumps(chunk))
            chunks += 1
            keys += len(chunk[1]) // 2  # type: ignore[arg-type]
            if len(buffer) >= 1 << 20:
                io.write_all(fd, bytes(buffer))
                buffer.clear()
        buffer += frame_record(cbor2.dumps([TRAILER_TAG, chunks, keys, dict(cursors or {})]))
        io.write_all(fd, bytes(buffer))
        io.fsync(fd)
    finally:
        io.close(fd)
    io.rename(tmp, final)
    io.fsync_dir(directory)
    return SnapshotInfo(revision, final)


def read_snapshot_header(path: str) -> tuple[int, int]:
    """``(revision, timestamp)`` from a snapshot's header (checked), without the body.

    Raises:
        SnapshotError: missing file or bad header.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(SNAPSHOT_HEADER.size)
    except OSError as exc:
        raise SnapshotError(f"{path}: {exc}") from None
    if len(data) < SNAPSHOT_HEADER.size:
        raise SnapshotError(f"{path}: truncated header")
    magic, _version, _flags, revision, timestamp, crc, _ = SNAPSHOT_HEADER.unpack_from(data)
    if magic != SNAPSHOT_MAGIC or zlib.crc32(data[:24]) != crc:
        raise SnapshotError(f"{path}: bad header")
    return int(revision), int(timestamp)


def list_snapshots(directory: str, io: DiskIO) -> list[SnapshotInfo]:
    """Snapshot files in ``directory``, oldest first (not validated)."""
    found = []
    for name in io.listdir(directory):
        match = SNAPSHOT_NAME_RE.match(name)
        if match:
            found.append(SnapshotInfo(int(match.group(1)), os.path.join(directory, name)))
    return sorted(found, key=lambda s: s.revision)


def _parse(data: bytes, path: str) -> tuple[int, int, list[memoryview], dict[str, int]]:
    """Validate a snapshot image; return (revision, timestamp, chunk payloads, cursors)."""
    if len(data) < SNAPSHOT_HEADER.size:
        raise SnapshotError(f"{path}: truncated header")
    magic, version, _flags, revision, timestamp, crc, _ = SNAPSHOT_HEADER.unpack_from(data)
    if magic != SNAPSHOT_MAGIC or zlib.crc32(data[:24]) != crc:
        raise SnapshotError(f"{path}: bad header")
    if version != SNAPSHOT_VERSION:
        raise SnapshotError(f"{path}: unsupported snapshot version {version}")
    scan = scan_segment(data, start=SNAPSHOT_HEADER.size)
    if scan.bad_offset is not None:
        raise SnapshotError(f"{path}: {scan.reason} at offset {scan.bad_offset}")
    if not scan.records:
        raise SnapshotError(f"{path}: truncated (no trailer)")
    payloads = [payload for _, payload in scan.records]
    try:
        trailer = cbor2.loads(payloads[-1])
    except Exception:
        trailer = None
    if (
        not isinstance(trailer, list)
        or len(trailer) != 4
        or trailer[0] != TRAILER_TAG
        or trailer[1] != len(payloads) - 1
        or not isinstance(trailer[3], dict)
    ):
        raise SnapshotError(f"{path}: truncated (no valid trailer)")
    if not all(type(n) is str and type(c) is int and c >= 0 for n, c in trailer[3].items()):
        raise SnapshotError(f"{path}: badly shaped trigger cursors")
    return int(revision), int(timestamp), payloads[:-1], trailer[3]


def _decode_chunks(payloads: list[memoryview], path: str) -> Iterator[tuple[str, list[object]]]:
    for payload in payloads:
        try:
            scope, flat = cbor2.loads(payload)
        except Exception as exc:
            raise SnapshotError(f"{path}: undecodable chunk: {exc}") from None
        if (
            type(scope) is not str
            or type(flat) is not list
            or len(flat) % 2
            or not set(map(type, flat[0::2])) <= {str}  # keys (C-speed checks)
            or not set(map(type, flat[1::2])) <= {bytes}  # encoded values
        ):
            raise SnapshotError(f"{path}: badly shaped chunk")
        yield scope, flat


def iter_snapshot_chunks(data: bytes, path: str) -> Iterator[tuple[str, list[object]]]:
    """Validate a snapshot image, then yield its ``(scope, [key, value, ...])`` chunks."""
    return _decode_chunks(_parse(data, path)[2], path)


def read_snapshot(info: SnapshotInfo, io: DiskIO) -> Snapshot:
    """Read a whole snapshot (state as ``scope -> key -> encoded value``, and cursors).

    Raises:
        SnapshotError: missing, truncated, bad checksum, badly shaped content, or a header
            whose revision is not the one its file name says (a renamed file is not trusted).
    """
    path = info.path
    try:
        data = io.read_file(path)
    except OSError as exc:
        raise SnapshotError(f"{path}: {exc}") from None
    revision, timestamp, payloads, cursors = _parse(data, path)
    if revision != info.revision:
        raise SnapshotError(
            f"{path}: the header says revision {revision}, the file name {info.revision}"
        )
    scopes: Scopes = {}
    for scope, flat in _decode_chunks(payloads, path):
        it = iter(flat)
        keys = scopes.get(scope)
        if keys is None:
            scopes[scope] = dict(zip(it, it, strict=True))  # type: ignore[arg-type]
        else:
            keys.update(zip(it, it, strict=True))  # type: ignore[arg-type]
    return Snapshot(revision, timestamp, scopes, cursors)
