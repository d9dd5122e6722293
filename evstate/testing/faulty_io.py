"""The fault-injecting file layer: :class:`FaultyIO` and :func:`crash`."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import threading
from collections import Counter
from typing import TYPE_CHECKING, NoReturn

from evstate.backends.file.diskio import DiskIO
from evstate.errors import Error
from evstate.testing.faults import (
    ALIASES,
    CUT_MODES,
    KINDS,
    POINTS,
    CutMode,
    DirEntries,
    Fault,
    Inode,
    PowerCutError,
    file_kind,
)

if TYPE_CHECKING:
    from evstate.core.store import Store

__all__ = ["FaultyIO", "crash"]


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class FaultyIO(DiskIO):
    """A :class:`DiskIO` that models durability and injects faults (see the module doc).

    Args:
        seed: seeds the random choices of ``mode="prefix"`` cuts (reproducible failures).
        record: keep every point passed in :attr:`trace` as ``(point, kind)``.
        real_fsync: also call the real ``fdatasync`` / directory fsync (slow; off by default).
    """

    def __init__(
        self, *, seed: int | None = None, record: bool = False, real_fsync: bool = False
    ) -> None:
        self.rng = random.Random(seed)
        self.record = record
        self.real_fsync = real_fsync
        self.trace: list[tuple[str, str | None]] = []
        self.hits: Counter[tuple[str, str | None]] = Counter()
        self.faults: list[Fault] = []
        self.cut: CutMode | None = None  # the mode of the cut that turned the power off
        self.cuts = 0
        self._lock = threading.RLock()
        self._dirs: dict[str, DirEntries] = {}
        self._fds: dict[int, Inode] = {}
        self._space: int | None = None

    # ---- arming faults --------------------------------------------------------------

    def inject(self, point: str, **options: object) -> Fault:
        """Arm a :class:`Fault` at ``point`` (``options`` are its fields); returns it.

        ``point`` is one of :data:`POINTS`; ``before_append`` / ``after_append`` mean the
        write points of segment files.

        Raises:
            ValueError: an unknown point, kind, action or cut mode.
        """
        kind = options.pop("kind", None)
        if point in ALIASES:
            point, kind = ALIASES[point]
        if point not in POINTS:
            raise ValueError(f"unknown point {point!r}; one of {', '.join(POINTS)}")
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
        fault = Fault(point, kind, **options)  # type: ignore[arg-type]
        if fault.action not in ("error", "crash") or fault.mode not in CUT_MODES:
            raise ValueError(f"bad action {fault.action!r} or mode {fault.mode!r}")
        with self._lock:
            self.faults.append(fault)
        return fault

    def fail_at(
        self,
        point: str,
        *,
        kind: str | None = None,
        error: int = errno.EIO,
        hit: int = 1,
        times: int | None = 1,
        tear: int | float | None = None,
    ) -> Fault:
        """Raise ``OSError(error)`` at ``point`` (``EIO`` by default; ``ENOSPC``, ...)."""
        return self.inject(
            point, kind=kind, action="error", errno=error, hit=hit, times=times, tear=tear
        )

    def crash_at(
        self,
        point: str,
        *,
        kind: str | None = None,
        hit: int = 1,
        mode: CutMode = "forget",
        tear: int | float | None = None,
    ) -> Fault:
        """Cut the power at the ``hit``-th pass of ``point`` (see the module doc)."""
        return self.inject(point, kind=kind, action="crash", hit=hit, mode=mode, tear=tear)

    def fill_disk(self, free_bytes: int = 0) -> None:
        """From now on the files may grow by ``free_bytes`` more in total, then ``ENOSPC``.

        A write that does not fit writes what fits and raises ``ENOSPC`` (a short write, as
        the kernel does). Truncating or removing a file gives its bytes back. Lasts until
        :meth:`free_space`.
        """
        with self._lock:
            self._space = free_bytes

    def free_space(self) -> None:
        """End :meth:`fill_disk`: writes succeed again."""
        with self._lock:
            self._space = None

    def clear(self) -> None:
        """Disarm every fault (a full disk stays full: see :meth:`free_space`)."""
        with self._lock:
            self.faults.clear()

    # ---- power ----------------------------------------------------------------------

    def power_cut(self, mode: CutMode = "forget") -> None:
        """Cut the power now: rewrite the directories to their durable state (``mode``).

        Every later call of the layer raises :class:`PowerCutError` until :meth:`restart`.
        Idempotent while the power is off.
        """
        if mode not in CUT_MODES:
            raise ValueError(f"unknown cut mode {mode!r}")
        with self._lock:
            if self.cut is None:
                self._cut(mode)

    def restart(self) -> None:
        """Turn the power back on, keeping the durable model (for reopening a store).

        Call it after the old store is closed (:func:`crash`). Armed faults stay armed.
        """
        with self._lock:
            self.cut = None
            self._fds.clear()

    @property
    def powered(self) -> bool:
        """False between a cut and :meth:`restart`."""
        return self.cut is None

    def durable_names(self, directory: str) -> list[str]:
        """The names a power cut would leave in ``directory`` (model files only), sorted."""
        with self._lock:
            return sorted(self._dir(directory).durable)

    def _cut(self, mode: CutMode) -> None:
        self.cut = mode
        self.cuts += 1
        if mode == "process":
            return
        for path, folder in self._dirs.items():
            try:
                present = set(os.listdir(path))
            except FileNotFoundError:
                continue
            for name in set(folder.entries) | set(folder.durable):
                target = os.path.join(path, name)
                inode = folder.durable.get(name)
                if inode is None:
                    if name in present:
                        os.unlink(target)
                    continue
                content = self._survivor(inode, mode)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
                try:
                    super().write_all(fd, content)
                finally:
                    os.close(fd)
                inode.data = bytearray(content)
                inode.durable = content
                inode.lost = []
                inode.path = target
            folder.entries = dict(folder.durable)
            folder.pending = "dir"

    def _survivor(self, inode: Inode, mode: CutMode) -> bytes:
        extra = inode.unsynced() if mode != "forget" else None
        if not extra:
            return inode.durable
        if mode == "prefix":
            extra = extra[: self.rng.randint(0, len(extra))]
        elif mode == "zeros":
            extra = bytes(len(extra))
        return inode.durable + extra

    # ---- bookkeeping ------------------------------------------------------------------

    def _alive(self, where: str) -> None:
        if self.cut is not None:
            raise PowerCutError(f"the power is off; {where}")

    def _dir(self, directory: str) -> DirEntries:
        key = os.path.abspath(directory)
        folder = self._dirs.get(key)
        if folder is None:
            entries = {}
            for name in os.listdir(key):
                path = os.path.join(key, name)
                if os.path.isfile(path):
                    data = _read(path)
                    entries[name] = Inode(path, data, data)
            folder = self._dirs[key] = DirEntries(entries)
        return folder

    def _entry(self, path: str) -> tuple[DirEntries, str]:
        return self._dir(os.path.dirname(os.path.abspath(path))), os.path.basename(path)

    def _inode(self, path: str) -> Inode:
        """The tracked file at ``path``; a file unknown to the model is adopted as durable."""
        folder, name = self._entry(path)
        inode = folder.entries.get(name)
        if inode is None:
            data = _read(path)
            inode = folder.entries[name] = Inode(os.path.abspath(path), data, data)
            folder.durable.setdefault(name, inode)
        return inode

    def _match(self, point: str, kind: str | None, path: str) -> Fault | None:
        """Pass ``point``: count it and return the fault that fires here, if any."""
        self.hits[(point, kind)] += 1
        if self.record:
            self.trace.append((point, kind))
        for fault in self.faults:
            if fault.spent or not fault._matches(point, kind, path):
                continue
            fault.matched += 1
            if fault.matched >= fault.hit:
                fault.fired += 1
                return fault
        return None

    def _fire(self, fault: Fault, point: str, kind: str | None, path: str) -> NoReturn:
        where = f"{point} {kind or ''} {os.path.basename(path)}".replace("  ", " ").strip()
        if fault.action == "crash":
            self._cut(fault.mode)
            raise PowerCutError(where)
        raise OSError(fault.errno, f"injected {os.strerror(fault.errno)} at {where}")

    def _point(self, point: str, kind: str | None, path: str) -> None:
        fault = self._match(point, kind, path)
        if fault is not None:
            self._fire(fault, point, kind, path)

    # ---- DiskIO -----------------------------------------------------------------------

    def failpoint(self, name: str) -> None:
        """Pass the engine's named point ``name`` (may cut the power or raise)."""
        with self._lock:
            self._alive(name)
            self._point(name, None, "")

    def open_append(self, path: str) -> int:
        """Open an existing file for appending (adopting it into the model if unknown)."""
        with self._lock:
            self._alive("open " + path)
            inode = self._inode(path)
            fd = super().open_append(path)
            self._fds[fd] = inode
            return fd

    def create_exclusive(self, path: str) -> int:
        """Create a new file; its name is durable after :meth:`fsync_dir`."""
        kind = file_kind(path)
        with self._lock:
            self._alive("create " + path)
            folder, name = self._entry(path)
            self._point("before_create", kind, path)
            fd = super().create_exclusive(path)
            inode = folder.entries[name] = Inode(os.path.abspath(path), b"", b"")
            folder.pending = kind
            self._fds[fd] = inode
            try:
                self._point("after_create", kind, path)
            except OSError:
                self.close(fd)  # the caller never gets the descriptor
                raise
            return fd

    def write_all(self, fd: int, data: bytes) -> None:
        """Write ``data``: it reaches the page cache, not the disk (see :meth:`fsync`)."""
        with self._lock:
            inode = self._fds[fd]
            kind = file_kind(inode.path)
            self._alive("write " + inode.path)
            fault = self._match("before_write", kind, inode.path)
            if fault is not None and fault.tear is None:
                self._fire(fault, "before_write", kind, inode.path)
            size = len(data)
            if fault is not None:
                tear = fault.tear
                size = tear if isinstance(tear, int) else int(len(data) * (tear or 0))
                size = min(max(size, 0), len(data))
            short = self._space is not None and size > self._space
            if self._space is not None:
                size = min(size, self._space)
                self._space -= size
            if size:
                super().write_all(fd, data[:size])
                inode.data += data[:size]
            if fault is not None:
                self._fire(fault, "before_write", kind, inode.path)
            if short:
                raise OSError(errno.ENOSPC, f"no space left on device ({inode.path})")
            self._point("after_write", kind, inode.path)

    def fsync(self, fd: int) -> None:
        """Make the file's content durable; a failed fsync loses the unsynced bytes."""
        with self._lock:
            inode = self._fds[fd]
            kind = file_kind(inode.path)
            self._alive("fsync " + inode.path)
            try:
                self._point("before_fsync", kind, inode.path)
            except PowerCutError:
                raise
            except OSError:
                start = min(len(inode.durable), len(inode.data))
                if start < len(inode.data):
                    inode.lost.append((start, len(inode.data)))
                raise
            if self.real_fsync:
                super().fsync(fd)
            content = bytearray(inode.data)
            for start, end in inode.lost:
                end = min(end, len(content))
                if start < end:
                    content[start:end] = bytes(end - start)
            inode.durable = bytes(content)
            inode.lost = []
            self._point("after_fsync", kind, inode.path)

    def fsync_dir(self, directory: str) -> None:
        """Make every entry change (create, rename, unlink) in ``directory`` durable."""
        with self._lock:
            self._alive("fsync_dir " + directory)
            folder = self._dir(directory)
            kind = folder.pending
            self._point("before_fsync_dir", kind, directory)
            if self.real_fsync:
                super().fsync_dir(directory)
            folder.durable = dict(folder.entries)
            folder.pending = "dir"
            self._point("after_fsync_dir", kind, directory)

    def truncate(self, fd: int, size: int) -> None:
        """Cut the file to ``size`` bytes (durable only after :meth:`fsync`)."""
        with self._lock:
            inode = self._fds[fd]
            kind = file_kind(inode.path)
            self._alive("truncate " + inode.path)
            self._point("before_truncate", kind, inode.path)
            super().truncate(fd, size)
            freed = max(len(inode.data) - size, 0)
            del inode.data[size:]
            if self._space is not None:
                self._space += freed
            self._point("after_truncate", kind, inode.path)

    def truncate_path(self, path: str, size: int) -> None:
        """Cut the file at ``path`` to ``size`` bytes and fsync it."""
        with self._lock:
            self._alive("truncate " + path)
            inode = self._inode(path)
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            self._fds[fd] = inode
            try:
                self.truncate(fd, size)
                self.fsync(fd)
            finally:
                self.close(fd)

    def write_note(self, path: str, text: str) -> None:
        """An informational file (``LOCK``'s pid): passes the write points, never durable.

        It stays outside the durability model (nothing reads it back as data); a full disk
        or an injected fault at ``before_write`` (kind ``other``) makes it raise.
        """
        with self._lock:
            self._alive("write " + path)
            self._point("before_write", "other", path)
            if self._space is not None and self._space < len(text.encode()):
                raise OSError(errno.ENOSPC, f"no space left on device ({path})")
            super().write_note(path, text)
            self._point("after_write", "other", path)

    def close(self, fd: int) -> None:
        """Close a descriptor (works with the power off: closing writes nothing)."""
        with self._lock:
            self._fds.pop(fd, None)
            super().close(fd)

    def read_file(self, path: str) -> bytes:
        """A file's bytes as readers see them (the page cache, unsynced bytes included)."""
        with self._lock:
            self._alive("read " + path)
            return super().read_file(path)

    def listdir(self, directory: str) -> list[str]:
        """Names in ``directory`` (as readers see them)."""
        with self._lock:
            self._alive("listdir " + directory)
            self._dir(directory)
            return super().listdir(directory)

    def rename(self, source: str, target: str) -> None:
        """Replace ``target`` with ``source``; durable after :meth:`fsync_dir`."""
        kind = file_kind(source)
        with self._lock:
            self._alive("rename " + source)
            src_dir, src_name = self._entry(source)
            dst_dir, dst_name = self._entry(target)
            inode = self._inode(source)
            self._point("before_rename", kind, source)
            super().rename(source, target)
            src_dir.entries.pop(src_name, None)
            dst_dir.entries[dst_name] = inode
            inode.path = os.path.abspath(target)
            src_dir.pending = dst_dir.pending = kind
            self._point("after_rename", kind, source)

    def remove(self, path: str) -> None:
        """Unlink a file; durable after :meth:`fsync_dir`."""
        kind = file_kind(path)
        with self._lock:
            self._alive("remove " + path)
            folder, name = self._entry(path)
            self._point("before_remove", kind, path)
            super().remove(path)
            inode = folder.entries.pop(name, None)
            folder.pending = kind
            if inode is not None and self._space is not None:
                self._space += len(inode.data)
            self._point("after_remove", kind, path)


def crash(store: Store, io: FaultyIO, mode: CutMode = "forget") -> None:
    """Cut the power under ``store`` (opened with ``io``), if not cut yet, and abandon it.

    The store is then closed without writing anything (every call of the layer fails), so
    its directory lock is released and the directory can be opened again. Errors from the
    dead store's close are expected and swallowed.
    """
    io.power_cut(mode)
    with contextlib.suppress(Error, OSError):
        store.close()
