"""Trigger cursor files (docs/format.md section 7), and the file store's cursor store.

One format and one writer for every cursor file: the owner's ``triggers.cbor`` and each
follower trigger's ``followers/<name>.cursor`` are a CBOR map framed with its length and a
CRC-32 (the record framing of section 3), replaced atomically (``.tmp``, fsync, rename, directory
fsync) through :class:`~evstate.backends.file.diskio.DiskIO`::

    {"version": 1, "resets": {name: head}, "triggers": {name: {"cursor": int,
     "parked": [{"revision", "event", "error", "attempts", "parked_at"}, ...]}}}

A bad file (a flipped bit, a stray edit) fails its checksum and is never read as cursors.

:class:`FileCursors` keeps the owner's cursors in memory (:class:`LocalCursors`) and
checkpoints them: at most every ``CHECKPOINT_INTERVAL`` while they move, after fsyncing the
log first (a cursor must never cover handler writes that are not durable yet).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import cbor2

from evstate.backends.file.diskio import DiskIO
from evstate.backends.file.layout import CURSOR_FILE_VERSION, TRIGGERS_FILE
from evstate.backends.file.segment import frame_record, unframe_single
from evstate.core.triggers.local import CommitHost, LocalCursors, TriggerCursor
from evstate.values import printable_text

__all__ = [
    "CHECKPOINT_INTERVAL",
    "CursorFile",
    "FileCursors",
    "decode_cursor_file",
    "encode_cursor_file",
    "read_cursor_file",
    "write_cursor_file",
]

log = logging.getLogger("evstate")

CHECKPOINT_INTERVAL = 0.1  # seconds between checkpoints while cursors move

CursorFile = tuple[dict[str, TriggerCursor], dict[str, int]]
"""What a cursor file holds: ``name -> cursor and dead letters``, and ``resets``."""


def _printable(value: Any) -> Any:
    """``value`` with every str made encodable (a dead letter's texts come from handlers)."""
    if isinstance(value, str):
        return printable_text(value)
    if isinstance(value, dict):
        return {printable_text(str(k)): _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    return value


def encode_cursor_file(triggers: dict[str, TriggerCursor], resets: dict[str, int]) -> bytes:
    """The bytes of a cursor file holding ``triggers`` (and ``resets``)."""
    body = {
        "version": CURSOR_FILE_VERSION,
        "resets": dict(resets),
        "triggers": {
            name: {"cursor": entry.cursor, "parked": entry.parked}
            for name, entry in triggers.items()
        },
    }
    try:
        payload = cbor2.dumps(body)
    except (UnicodeEncodeError, ValueError, TypeError):  # a text no encoder takes
        payload = cbor2.dumps(_printable(body))
    return frame_record(payload)


def decode_cursor_file(data: bytes) -> CursorFile:
    """Decode a cursor file.

    Raises:
        ValueError: (or a CBOR decode error) a bad checksum, or not that shape throughout.
    """
    body = cbor2.loads(unframe_single(data))
    triggers = body.get("triggers") if isinstance(body, dict) else None
    resets = body.get("resets", {}) if isinstance(body, dict) else None
    if (
        not isinstance(body, dict)
        or body.get("version") != CURSOR_FILE_VERSION
        or not isinstance(triggers, dict)
        or not isinstance(resets, dict)
        or not all(type(k) is str and type(v) is int for k, v in resets.items())
    ):
        raise ValueError(f"not a version {CURSOR_FILE_VERSION} trigger cursor file")
    result: dict[str, TriggerCursor] = {}
    for name, entry in triggers.items():
        cursor = entry.get("cursor", 0) if isinstance(entry, dict) else None
        parked = entry.get("parked", []) if isinstance(entry, dict) else None
        if (
            type(name) is not str
            or type(cursor) is not int
            or cursor < 0
            or type(parked) is not list
            or not all(
                isinstance(p, dict)
                and type(p.get("revision")) is int
                and type(p.get("attempts")) is int
                for p in parked
            )
        ):
            raise ValueError(f"badly shaped entry for trigger {name!r}")
        result[name] = TriggerCursor(cursor, parked)
    return result, resets


def read_cursor_file(io: DiskIO, path: str) -> CursorFile | None:
    """The cursor file at ``path``, or None if there is none.

    Raises:
        ValueError: the file is damaged or not a cursor file (see :func:`decode_cursor_file`).
        OSError: it cannot be read.
    """
    try:
        data = io.read_file(path)
    except FileNotFoundError:
        return None
    try:
        return decode_cursor_file(data)
    except ValueError:
        raise
    except Exception as exc:  # cbor2 raises several types for bad input
        raise ValueError(f"undecodable cursor file: {exc}") from None


def write_cursor_file(
    io: DiskIO, path: str, triggers: dict[str, TriggerCursor], resets: dict[str, int]
) -> None:
    """Replace the cursor file at ``path`` atomically and durably. Raises OSError."""
    io.replace_file(path, encode_cursor_file(triggers, resets))


class FileCursors(LocalCursors):
    """The owner's cursors, made durable in ``triggers.cbor`` (see the module doc).

    ``recovered`` maps a name to ``(cursor, revision of the snapshot or log record that
    holds it)``; at open the highest of those and the file's cursor wins, except over a
    ``replay_trigger``/``delete_trigger`` made after that revision (the file's ``resets``).
    """

    def __init__(
        self,
        host: CommitHost,
        directory: str,
        io: DiskIO,
        recovered: dict[str, tuple[int, int]],
        flush_log: Callable[[], None],
    ) -> None:
        super().__init__(host)
        self._path = os.path.join(directory, TRIGGERS_FILE)
        self._directory = directory
        self._io = io
        self._flush_log = flush_log
        self._resets: dict[str, int] = {}
        self._save_lock = threading.Lock()
        self._load(recovered)
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="evstate-trigger-checkpoints", daemon=True
        )
        self._checkpointer.start()

    def _load(self, recovered: dict[str, tuple[int, int]]) -> None:
        try:
            saved = read_cursor_file(self._io, self._path)
        except (OSError, ValueError) as exc:  # a bad file must not lose the log's cursors
            log.error("evstate: ignoring unreadable %s: %s", self._path, exc)
            saved = None
        if saved is not None:
            self._cursors, self._resets = saved
        for name, (cursor, source) in recovered.items():
            if source <= self._resets.get(name, -1):
                continue  # superseded by a later replay_trigger / delete_trigger
            entry = self._cursors.setdefault(name, TriggerCursor(cursor))
            entry.cursor = max(entry.cursor, cursor)

    def _moved_by_hand(self, name: str) -> None:
        self._resets[name] = self._host._visible_revision()

    def move(self, name: str, cursor: int) -> None:
        """Set the cursor by hand, durably now."""
        super().move(name, cursor)
        self.checkpoint()

    def forget(self, name: str) -> None:
        """Forget the cursor and dead letters, durably now."""
        super().forget(name)
        self.checkpoint()

    def checkpoint(self) -> None:
        """Make every cursor and dead letter durable now (log first, then the cursor file).

        A failure is logged and retried at the next checkpoint; it never stops delivery.
        """
        with self._save_lock:
            with self._lock:
                if not self.dirty:
                    return
                self.dirty = False
                triggers = {
                    name: TriggerCursor(c.cursor, list(c.parked))
                    for name, c in self._cursors.items()
                }
                resets = dict(self._resets)
            try:
                self._flush_log()
                self._io.failpoint("cursor_save")
                write_cursor_file(self._io, self._path, triggers, resets)
            except Exception as exc:
                with self._lock:
                    self.dirty = True
                log.error("evstate: could not checkpoint trigger cursors: %s", exc)

    def _checkpoint_loop(self) -> None:
        while not self._closing.wait(CHECKPOINT_INTERVAL):
            self.checkpoint()

    def close(self) -> None:
        """Stop checkpointing and write a final checkpoint."""
        self._closing.set()
        if self._checkpointer is not threading.current_thread():
            self._checkpointer.join()
        with self._lock:
            self.dirty = True
        self.checkpoint()
