"""Cursor files of follower triggers: one per trigger, written atomically, locked while run.

``<cursor_dir>/<name>.cursor`` (the name percent-encoded) is a CBOR map ``{"version": 1,
"name", "cursor", "parked"}``: the revision the trigger has processed and its dead letters
(``{"revision", "event", "error", "attempts", "parked_at"}``, as in ``triggers.cbor``). It is
replaced atomically: ``.tmp``, fsync, rename, directory fsync. ``<name>.lock`` is ``flock``-ed
by the process that runs the trigger, so one process at a time runs a given name, and the
offline edits below (used by ``evstate triggers --follower``) refuse while it runs.
"""

from __future__ import annotations

import fcntl
import os
import urllib.parse
from typing import Any

import cbor2

from evstate.errors import InvalidRequestError, StorageError, StoreLockedError

__all__ = [
    "CURSOR_SUFFIX",
    "LOCK_SUFFIX",
    "cursor_file",
    "drop_follower_parked",
    "list_follower_triggers",
    "lock_trigger",
    "read_cursor",
    "set_follower_cursor",
    "write_cursor",
]

CURSOR_SUFFIX = ".cursor"
LOCK_SUFFIX = ".lock"


def cursor_file(cursor_dir: str, name: str, suffix: str) -> str:
    """The path of ``name``'s cursor (or lock) file."""
    return os.path.join(cursor_dir, urllib.parse.quote(name, safe="") + suffix)


def read_cursor(cursor_dir: str, name: str) -> dict[str, Any] | None:
    """``name``'s cursor file as a dict, or ``None`` if it has none.

    Raises:
        StorageError: the file is unreadable or has an unknown shape.
    """
    path = cursor_file(cursor_dir, name, CURSOR_SUFFIX)
    try:
        with open(path, "rb") as f:
            data = cbor2.loads(f.read())
    except FileNotFoundError:
        return None
    except Exception as exc:  # cbor2 raises several types
        raise StorageError(f"unreadable follower cursor file {path}: {exc}") from None
    if (
        not isinstance(data, dict)
        or data.get("version") != 1
        or type(data.get("cursor")) is not int
    ):
        raise StorageError(f"follower cursor file {path} has an unknown shape")
    return data


def write_cursor(cursor_dir: str, name: str, cursor: int, parked: list[dict[str, Any]]) -> None:
    """Replace the cursor file atomically and durably."""
    os.makedirs(cursor_dir, exist_ok=True)
    path = cursor_file(cursor_dir, name, CURSOR_SUFFIX)
    tmp = path + ".tmp"
    body = cbor2.dumps({"version": 1, "name": name, "cursor": cursor, "parked": parked})
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(cursor_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def lock_trigger(cursor_dir: str, name: str) -> int:
    """``flock`` the trigger's lock file; returns the descriptor (close it to release)."""
    os.makedirs(cursor_dir, exist_ok=True)
    fd = os.open(
        cursor_file(cursor_dir, name, LOCK_SUFFIX), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLockedError(
            f"follower trigger {name!r} is running in another process ({cursor_dir})"
        ) from None
    return fd


def list_follower_triggers(cursor_dir: str) -> dict[str, dict[str, Any]]:
    """Every follower trigger with a cursor file: ``{name: {"cursor", "parked": [...]}}``."""
    found: dict[str, dict[str, Any]] = {}
    try:
        names = sorted(os.listdir(cursor_dir))
    except FileNotFoundError:
        return found
    for file_name in names:
        if file_name.endswith(CURSOR_SUFFIX):
            name = urllib.parse.unquote(file_name[: -len(CURSOR_SUFFIX)])
            data = read_cursor(cursor_dir, name)
            if data is not None:
                found[name] = {"cursor": data["cursor"], "parked": list(data.get("parked", []))}
    return found


def set_follower_cursor(cursor_dir: str, name: str, cursor: int) -> None:
    """Move a stopped follower trigger's cursor (delivery continues after ``cursor``).

    Raises:
        InvalidRequestError: no such trigger.
        StoreLockedError: the trigger is running in some process.
    """
    fd = lock_trigger(cursor_dir, name)
    try:
        data = read_cursor(cursor_dir, name)
        if data is None:
            raise InvalidRequestError(f"no follower trigger named {name!r} in {cursor_dir}")
        write_cursor(cursor_dir, name, cursor, list(data.get("parked", [])))
    finally:
        os.close(fd)


def drop_follower_parked(cursor_dir: str, name: str, revision: int | None = None) -> int:
    """Forget a stopped follower trigger's parked events (all, or one); returns how many."""
    fd = lock_trigger(cursor_dir, name)
    try:
        data = read_cursor(cursor_dir, name)
        if data is None:
            raise InvalidRequestError(f"no follower trigger named {name!r} in {cursor_dir}")
        parked = list(data.get("parked", []))
        kept = [p for p in parked if revision is not None and p.get("revision") != revision]
        write_cursor(cursor_dir, name, data["cursor"], kept)
        return len(parked) - len(kept)
    finally:
        os.close(fd)
