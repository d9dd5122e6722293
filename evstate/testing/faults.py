"""The fault model of :class:`~evstate.testing.FaultyIO`: points, faults, and files.

A file is what the page cache holds and what a power cut would leave; the rules are in
the :mod:`evstate.testing` docstring.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Final, Literal

from evstate.backends.file.diskio import FAILPOINTS

__all__ = [
    "ALIASES",
    "CUT_MODES",
    "KINDS",
    "POINTS",
    "CutMode",
    "Fault",
    "Inode",
    "PowerCutError",
    "DirEntries",
    "file_kind",
]

CutMode = Literal["forget", "prefix", "zeros", "process"]
CUT_MODES: Final[tuple[CutMode, ...]] = ("forget", "prefix", "zeros", "process")
KINDS: Final = ("segment", "snapshot", "cursor", "index", "other", "dir")
_OPS: Final = ("write", "fsync", "fsync_dir", "rename", "create", "remove", "truncate")
POINTS: Final[tuple[str, ...]] = (
    *(f"{when}_{op}" for op in _OPS for when in ("before", "after")),
    "before_append",
    "after_append",
    *FAILPOINTS,
)
ALIASES: Final = {
    "before_append": ("before_write", "segment"),
    "after_append": ("after_write", "segment"),
}


class PowerCutError(OSError):
    """The simulated power is off: raised where a cut happened and by every later call."""

    def __init__(self, where: str) -> None:
        super().__init__(errno.EIO, f"simulated power cut ({where})")


def file_kind(path: str) -> str:
    """``"segment"``, ``"snapshot"``, ``"cursor"``, ``"index"`` or ``"other"``, from a name."""
    name = os.path.basename(path)
    if name.endswith(".log") and name[:-4].isdigit():
        return "segment"
    if name.endswith((".snap", ".snap.tmp")):
        return "snapshot"
    if name.startswith("triggers.cbor"):
        return "cursor"
    if name.endswith((".keys", ".keys.tmp")):
        return "index"
    return "other"


@dataclass
class Fault:
    """One armed fault (what :meth:`FaultyIO.inject` returns).

    It fires at the ``hit``-th time its ``point`` is passed (with a matching ``kind`` and, if
    set, ``path`` substring), then at the following matching passes until it has fired
    ``times`` times (``None``: until :meth:`FaultyIO.clear`). ``action="error"`` raises
    ``OSError(errno)``; ``action="crash"`` cuts the power (``mode``) and raises
    :class:`PowerCutError`. At a ``before_write`` point, ``tear`` first writes that prefix of
    the data (a byte count, or a fraction of it): a torn write. ``fired`` counts firings.
    """

    point: str
    kind: str | None = None
    path: str | None = None
    action: Literal["error", "crash"] = "error"
    errno: int = errno.EIO
    hit: int = 1
    times: int | None = 1
    mode: CutMode = "forget"
    tear: int | float | None = None
    matched: int = 0
    fired: int = 0

    def _matches(self, point: str, kind: str | None, path: str) -> bool:
        if self.point != point or (self.kind is not None and self.kind != kind):
            return False
        return self.path is None or self.path in path

    @property
    def spent(self) -> bool:
        """True once it has fired ``times`` times."""
        return self.times is not None and self.fired >= self.times


class Inode:
    """One file: what the page cache holds and what would survive a power cut."""

    __slots__ = ("data", "durable", "lost", "path")

    def __init__(self, path: str, data: bytes, durable: bytes) -> None:
        self.path = path
        self.data = bytearray(data)
        self.durable = durable
        self.lost: list[tuple[int, int]] = []  # ranges a failed fsync dropped

    def unsynced(self) -> bytes | None:
        """The bytes past the durable content (lost ranges zeroed); None if not an append."""
        size = len(self.durable)
        if len(self.data) < size or self.data[:size] != self.durable:
            return None
        extra = bytearray(self.data[size:])
        for start, end in self.lost:
            lo, hi = max(start - size, 0), min(end - size, len(extra))
            if lo < hi:
                extra[lo:hi] = bytes(hi - lo)
        return bytes(extra)


class DirEntries:
    """A directory's entries now, and the entries a power cut would leave."""

    __slots__ = ("durable", "entries", "pending")

    def __init__(self, entries: dict[str, Inode]) -> None:
        self.entries = entries
        self.durable = dict(entries)
        self.pending = "dir"  # kind of the newest entry change not yet made durable
