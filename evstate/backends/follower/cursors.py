"""Cursor files of follower triggers: one per trigger, checksummed, locked while it runs.

``<cursor_dir>/<name>.cursor`` holds the trigger's cursor and dead letters in the one
cursor-file format (docs/format.md section 7, :mod:`evstate.backends.file.cursors`): framed,
checksummed, replaced atomically, so a flipped bit is caught instead of skipping events.
``<name>.lock`` is ``flock``-ed by the process that runs the trigger, so one process at a
time runs a given name, and edits of a stopped trigger (``replay_trigger``,
``drop_parked``, ``delete_trigger`` on a follower that does not run it) take it too.

File names are the name percent-encoded; a name too long for a file name is shortened and
made unique with a digest (the full name is inside the file).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import urllib.parse
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from evstate.backends.file.cursors import read_cursor_file, write_cursor_file
from evstate.backends.file.diskio import DiskIO
from evstate.core.triggers.cursors import KnownTrigger, check_resumable, start_cursor
from evstate.core.triggers.local import TriggerCursor
from evstate.core.writes import Write
from evstate.errors import InvalidRequestError, StorageError, StoreLockedError

__all__ = [
    "CHECKPOINT_INTERVAL",
    "CURSOR_SUFFIX",
    "FollowerCursors",
    "LOCK_SUFFIX",
]

log = logging.getLogger("evstate")

CURSOR_SUFFIX = ".cursor"
LOCK_SUFFIX = ".lock"
CHECKPOINT_INTERVAL = 0.1
_MAX_STEM = 160  # bytes of a file name kept from the name; the rest is a digest


def _stem(name: str) -> str:
    quoted = urllib.parse.quote(name, safe="")
    if len(quoted) <= _MAX_STEM:
        return quoted
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{quoted[: _MAX_STEM - 33]}~{digest}"


@dataclass(eq=False)
class _Held:
    """A trigger this process runs: its lock and its cursor in memory."""

    fd: int
    entry: TriggerCursor
    dirty: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)


class FollowerCursors:
    """The :class:`~evstate.core.triggers.cursors.CursorStore` of a follower."""

    writable = False
    poll_interval = 0.1

    def __init__(self, cursor_dir: str, io: DiskIO, sync_log: Callable[[], None]) -> None:
        """``sync_log()`` makes the owner's segment being read durable before a cursor is."""
        self.cursor_dir = cursor_dir
        self._io = io
        self._sync_log = sync_log
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._checkpointer: threading.Thread | None = None

    # ---- files ----------------------------------------------------------------------

    def _path(self, name: str, suffix: str) -> str:
        return os.path.join(self.cursor_dir, _stem(name) + suffix)

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[int]:
        fd = self._take_lock(name)
        try:
            yield fd
        finally:
            os.close(fd)

    def _take_lock(self, name: str) -> int:
        try:
            self._io.makedirs(self.cursor_dir)
            fd = os.open(
                self._path(name, LOCK_SUFFIX),
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
            )
        except OSError as exc:
            raise StorageError(
                f"cannot open the lock of follower trigger {name!r} in {self.cursor_dir}: {exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(
                f"follower trigger {name!r} is running in another process ({self.cursor_dir})"
            ) from None
        return fd

    def _read(self, name: str) -> TriggerCursor | None:
        path = self._path(name, CURSOR_SUFFIX)
        try:
            found = read_cursor_file(self._io, path)
        except (OSError, ValueError) as exc:
            raise StorageError(f"unreadable follower cursor file {path}: {exc}") from None
        return None if found is None else found[0].get(name)

    def _write(self, name: str, entry: TriggerCursor) -> None:
        self._io.makedirs(self.cursor_dir)
        write_cursor_file(self._io, self._path(name, CURSOR_SUFFIX), {name: entry}, {})

    def _save(self, name: str, held: _Held) -> None:
        """Write ``held``'s cursor file if it changed; errors are logged and retried."""
        with held.lock:
            if not held.dirty:
                return
            held.dirty = False
            entry = TriggerCursor(held.entry.cursor, [dict(p) for p in held.entry.parked])
        try:
            self._sync_log()
            self._write(name, entry)
        except OSError as exc:
            held.dirty = True
            log.error("evstate follower: could not write the cursor of %r: %s", name, exc)

    def _checkpoint_loop(self) -> None:
        while not self._closing.wait(CHECKPOINT_INTERVAL):
            with self._lock:
                held = list(self._held.items())
            for name, entry in held:
                self._save(name, entry)

    def _require_held(self, name: str) -> _Held:
        held = self._held.get(name)
        if held is None:
            raise InvalidRequestError(f"follower trigger {name!r} is not registered here")
        return held

    # ---- the CursorStore protocol -----------------------------------------------------

    def register(self, name: str, start: str | int, oldest: int, head: int) -> None:
        """Lock ``name``'s files for this process and load (or start) its cursor."""
        fd = self._take_lock(name)
        try:
            saved = self._read(name)
            if saved is None:
                entry = TriggerCursor(start_cursor(name, start, oldest, head))
            else:
                check_resumable(name, saved.cursor, oldest)
                entry = saved
                if entry.cursor > head:
                    log.warning(
                        "evstate follower: trigger %r cursor %d is past the log's head %d "
                        "(writes lost in an OS crash, or another store); continuing from the "
                        "head",
                        name,
                        entry.cursor,
                        head,
                    )
                    entry.cursor = head
        except BaseException:
            os.close(fd)
            raise
        with self._lock:
            self._held[name] = _Held(fd, entry)
            if self._checkpointer is None:
                self._checkpointer = threading.Thread(
                    target=self._checkpoint_loop, name="evstate-follower-cursors", daemon=True
                )
                self._checkpointer.start()

    def unregister(self, name: str) -> None:
        """Write the cursor file and release the lock."""
        with self._lock:
            held = self._held.pop(name, None)
        if held is None:
            return
        try:
            self._save(name, held)
        finally:
            os.close(held.fd)

    def claim(self, name: str) -> int | None:
        """The cursor (the lock taken at registration is this process's claim)."""
        return self._require_held(name).entry.cursor

    def pause(self, name: str) -> None:
        """Keep the lock: a paused follower trigger still belongs to this process."""

    def position(self, name: str) -> int:
        """The cursor: in memory while it runs here, else from its file (0 if none)."""
        held = self._held.get(name)
        if held is not None:
            return held.entry.cursor
        saved = self._read(name)
        return 0 if saved is None else saved.cursor

    def advance(
        self, name: str, revision: int, writes: list[Write], letter: dict[str, Any] | None
    ) -> None:
        """Move the cursor in memory (written by the checkpointer)."""
        if writes:  # the read-only context refuses writes before they get here
            raise InvalidRequestError("a follower trigger cannot write to the store")
        held = self._require_held(name)
        with held.lock:
            held.entry.cursor = revision
            if letter is not None:
                held.entry.parked.append(letter)
            held.dirty = True

    def flush(self, name: str) -> None:
        """Nothing to do: the checkpointer writes the cursor."""

    def move(self, name: str, cursor: int) -> None:
        """Set a stopped trigger's cursor (its lock is taken for the edit)."""
        with self._locked(name):
            saved = self._read(name)
            if saved is None:
                raise InvalidRequestError(
                    f"no follower trigger named {name!r} in {self.cursor_dir}"
                )
            saved.cursor = cursor
            self._write(name, saved)

    def forget(self, name: str) -> None:
        """Remove a stopped trigger's cursor file (and its lock file)."""
        with self._locked(name):
            for suffix in (CURSOR_SUFFIX, LOCK_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    self._io.remove(self._path(name, suffix))

    def known(self) -> dict[str, KnownTrigger]:
        """Every follower trigger with a cursor file, and those running here."""
        found: dict[str, KnownTrigger] = {}
        try:
            files = sorted(self._io.listdir(self.cursor_dir))
        except FileNotFoundError:
            files = []
        for file_name in files:
            if not file_name.endswith(CURSOR_SUFFIX):
                continue
            path = os.path.join(self.cursor_dir, file_name)
            try:
                saved = read_cursor_file(self._io, path)
            except (OSError, ValueError) as exc:
                log.warning("evstate follower: unreadable cursor file %s: %s", path, exc)
                continue
            for name, entry in (saved or ({}, {}))[0].items():
                found[name] = KnownTrigger(entry.cursor, len(entry.parked), None)
        with self._lock:
            for name, held in self._held.items():
                found[name] = KnownTrigger(held.entry.cursor, len(held.entry.parked), None)
        return found

    def parked(self, name: str) -> list[dict[str, Any]]:
        """The dead letters of ``name``."""
        held = self._held.get(name)
        if held is not None:
            with held.lock:
                return [dict(p) for p in held.entry.parked]
        saved = self._read(name)
        if saved is None:
            raise InvalidRequestError(f"no follower trigger named {name!r}")
        return list(saved.parked)

    def drop_parked(self, name: str, revision: int | None) -> int:
        """Forget dead letters (all, or one revision); returns how many."""
        held = self._held.get(name)
        if held is not None:
            with held.lock:
                before = len(held.entry.parked)
                held.entry.parked = _without(held.entry.parked, revision)
                held.dirty = True
                return before - len(held.entry.parked)
        with self._locked(name):
            saved = self._read(name)
            if saved is None:
                raise InvalidRequestError(f"no follower trigger named {name!r}")
            before = len(saved.parked)
            saved.parked = _without(saved.parked, revision)
            self._write(name, saved)
            return before - len(saved.parked)

    def unpark(self, name: str, letter: dict[str, Any], writes: list[Write]) -> bool:
        """Remove a replayed letter (a follower's handler writes nothing to the store)."""
        held = self._require_held(name)
        with held.lock:
            before = len(held.entry.parked)
            held.entry.parked = _without(held.entry.parked, letter["revision"])
            held.dirty = True
            return len(held.entry.parked) < before

    def update_parked(self, name: str, letter: dict[str, Any]) -> None:
        """Store the new error and attempt count of a letter that failed again."""
        held = self._require_held(name)
        with held.lock:
            held.entry.parked = [
                dict(letter) if p["revision"] == letter["revision"] else p
                for p in held.entry.parked
            ]
            held.dirty = True

    def pin(self, registered: Collection[str]) -> int | None:
        """None: a follower's triggers never hold back the owner's retention."""
        return None

    def close(self) -> None:
        """Stop the checkpointer (triggers were unregistered, their cursors written)."""
        self._closing.set()
        if self._checkpointer is not None and self._checkpointer is not threading.current_thread():
            self._checkpointer.join()


def _without(parked: list[dict[str, Any]], revision: int | None) -> list[dict[str, Any]]:
    return [p for p in parked if revision is not None and p.get("revision") != revision]
