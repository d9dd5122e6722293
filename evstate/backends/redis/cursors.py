"""Trigger cursors of a fleet sharing one Redis: leases, fenced commits, dead letters.

The redis store's :class:`~evstate.core.triggers.cursors.CursorStore`. Each trigger name has
a hash ``evstate:trigger:<name>`` (its ``cursor``, and a heartbeat per process that has it
registered) and a **lease** ``evstate:lease:<name>`` (a token with a TTL). Every process that
registers the name runs a runner, but only the lease holder delivers, so each event reaches
one process, in revision order. A keeper thread renews held leases every ``lease_ms / 3``;
if the holder dies its lease expires and another process takes over from the cursor.

Fencing: a cursor move (with the handler's writes, or a dead letter) is one COMMIT script
that checks the token is still the lease value; a holder that lost its lease writes
nothing (:class:`~evstate.core.triggers.cursors.Fenced`), drops what it has in hand and
claims again. So delivery is in order and **at least once** for external effects, and
writes through ``event.store`` happen **exactly once**. Advances with no writes are noted
and committed together at most every ``ACK_EVERY`` seconds, and at the end of each batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from evstate.backends.redis.client import Backend, decode_name
from evstate.backends.redis.scripts import LOG, META, TRIGGERS, lease_key, parked_key, trigger_key
from evstate.backends.redis.writes import Fence, Writer
from evstate.core.feed import RecordFeed
from evstate.core.triggers.cursors import Deleted, Fenced, KnownTrigger
from evstate.core.writes import Write
from evstate.errors import HistoryCompactedError, InvalidRequestError, StorageError

__all__ = [
    "ACK_EVERY",
    "RedisCursors",
    "WATCH_BLOCK_MS",
]

log = logging.getLogger("evstate")

ACK_EVERY = 0.1  # seconds between commits of advances that wrote nothing
WATCH_BLOCK_MS = 250  # XREAD BLOCK of the wake-up watcher (also bounds how long close waits)


@dataclass(eq=False)
class _Held:
    """A trigger registered in this process."""

    holder: bool = False
    cursor: int = 0
    noted: int | None = None  # an advance not committed yet
    committed_at: float = 0.0


class RedisCursors:
    """Cursors, leases and dead letters of a redis store's triggers (see the module doc)."""

    writable = True
    poll_interval = 0.005

    def __init__(self, backend: Backend, writer: Writer, feed: RecordFeed, lease_ms: int) -> None:
        self._backend = backend
        self._writer = writer
        self._feed = feed
        self.lease_ms = lease_ms
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._helpers: list[threading.Thread] = []

    # ---- leases -------------------------------------------------------------------------

    def _lease(self, name: str, mode: str) -> int:
        keys = [lease_key(name), trigger_key(name)]
        holder = f"{socket.gethostname()}:{os.getpid()}"
        args = [self.consumer, self.lease_ms, mode, holder, time.time_ns() // 1_000_000]
        return int(self._backend.script("lease", keys, args, "hold a trigger lease"))

    def _release(self, name: str, held: _Held) -> None:
        if not held.holder:
            return
        held.holder = False
        try:
            self._lease(name, "release")
        except StorageError as exc:  # it expires by itself
            log.warning("evstate: trigger %r: lease not released: %s", name, exc)

    def _read_cursor(self, name: str) -> int:
        raw = self._backend.run("read a cursor", lambda c: c.hget(trigger_key(name), "cursor"))
        return int(raw or 0)

    def _keep(self) -> None:
        """Every lease_ms / 3: heartbeats, renew held leases; wake idle runners."""
        while not self._closing.wait(self.lease_ms / 3000):
            with self._lock:
                held = list(self._held.items())
            for name, entry in held:
                try:
                    if self._lease(name, "renew") != 1:
                        entry.holder = False  # lost it: the fences stop its commits anyway
                except StorageError as exc:
                    log.warning("evstate: trigger %r keeper: %s", name, exc)
            self._feed.notify()

    def _watch(self) -> None:
        """Wake the runners as soon as any process appends an event (XREAD BLOCK)."""
        client: Any = self._backend.new_client(socket_timeout=5.0)
        last: bytes = b"$"
        try:
            while not self._closing.is_set():
                try:
                    found = client.xread({LOG: last}, count=1000, block=WATCH_BLOCK_MS)
                except Exception:  # unavailable: the runners report it; just wait
                    self._closing.wait(0.5)
                    continue
                if found:
                    last = found[0][1][-1][0]
                    self._feed.notify()
        finally:
            client.close()

    def _start_helpers(self) -> None:
        if self._helpers:
            return
        for target, name in ((self._keep, "keeper"), (self._watch, "watcher")):
            thread = threading.Thread(target=target, name=f"evstate-trigger-{name}", daemon=True)
            thread.start()
            self._helpers.append(thread)

    # ---- the CursorStore protocol ---------------------------------------------------------

    def register(self, name: str, start: str | int, oldest: int, head: int) -> None:
        """Create the trigger's hash (cursor per ``start``) or check the one it has."""
        if start not in ("latest", "earliest") and not (type(start) is int and start >= 1):
            raise InvalidRequestError(
                f"start must be 'latest', 'earliest' or a revision >= 1, got {start!r}"
            )
        reply = self._backend.script(
            "register",
            [trigger_key(name), META, LOG, TRIGGERS],
            [name, start, time.time_ns() // 1_000_000, self.consumer],
            "register a trigger",
        )
        status, *numbers = [r.decode() for r in reply]
        if status == "compacted":
            horizon = int(numbers[0]) + 1
            raise HistoryCompactedError(
                f"trigger {name!r}: revision {start} is before the retention horizon "
                f"(revision {horizon})",
                horizon=horizon,
            )
        cursor, horizon = int(numbers[0]), int(numbers[1])
        if cursor < horizon:
            raise HistoryCompactedError(
                f"trigger {name!r} stopped at revision {cursor}, but history before revision "
                f"{horizon + 1} was compacted: replay_trigger() from a retained revision, or "
                "delete_trigger() and register it again",
                horizon=horizon + 1,
            )
        with self._lock:
            self._held[name] = _Held(cursor=cursor)
            self._start_helpers()

    def unregister(self, name: str) -> None:
        """Commit what was noted, hand the lease over, and drop this process's heartbeat."""
        with self._lock:
            held = self._held.pop(name, None)
        if held is None:
            return
        with contextlib.suppress(Fenced, StorageError):
            self._commit_noted(name, held)
        self._release(name, held)
        try:
            field = f"hb:{self.consumer}"
            self._backend.run("unregister", lambda c: c.hdel(trigger_key(name), field))
        except StorageError as exc:
            log.warning("evstate: trigger %r: could not clear its heartbeat: %s", name, exc)

    def _require(self, name: str) -> _Held:
        held = self._held.get(name)
        if held is None:
            raise InvalidRequestError(f"trigger {name!r} is not registered here")
        return held

    def claim(self, name: str) -> int | None:
        """The cursor if this process holds the lease (taking it if free), else None."""
        held = self._require(name)
        if held.holder:
            return held.cursor
        status = self._lease(name, "acquire")
        if status < 0:
            raise Deleted("the trigger was deleted by another process")
        if status == 0:
            return None
        held.holder = True
        held.cursor = self._read_cursor(name)
        held.noted = None
        held.committed_at = time.monotonic()
        return held.cursor

    def pause(self, name: str) -> None:
        """Commit what was noted and hand the lease over while delivery is paused here."""
        held = self._held.get(name)
        if held is not None and held.holder:
            with contextlib.suppress(Fenced, StorageError):
                self._commit_noted(name, held)
            self._release(name, held)

    def position(self, name: str) -> int:
        """The fleet's cursor, read from Redis."""
        return self._read_cursor(name)

    def _commit(self, name: str, held: _Held, writes: list[Write], fence: Fence) -> None:
        status = self._writer.commit_handler(writes, fence)
        if status != "ok":
            held.holder = False
            held.noted = None
            raise Fenced(f"trigger {name!r}: the lease was lost ({status})")
        held.noted = None
        held.committed_at = time.monotonic()

    def _commit_noted(self, name: str, held: _Held) -> None:
        if held.noted is not None and held.holder:
            self._commit(name, held, [], Fence(name, self.consumer, held.noted))

    def advance(
        self, name: str, revision: int, writes: list[Write], letter: dict[str, Any] | None
    ) -> None:
        """Commit the cursor move with the writes or the letter; note it when there are none."""
        held = self._require(name)
        if not writes and letter is None:
            held.cursor = held.noted = revision
            if time.monotonic() - held.committed_at > ACK_EVERY:
                self._commit_noted(name, held)
            return
        fence = Fence(name, self.consumer, revision)
        if letter is not None:
            fence = fence._replace(
                park_mode="put", park_field=str(revision), park_value=json.dumps(letter).encode()
            )
        self._commit(name, held, writes, fence)
        held.cursor = revision

    def flush(self, name: str) -> None:
        """Commit the noted advance (end of a batch)."""
        held = self._held.get(name)
        if held is not None:
            self._commit_noted(name, held)

    def move(self, name: str, cursor: int) -> None:
        """Set the cursor fleet-wide and revoke the lease (the holder drops what it has)."""
        keys = [trigger_key(name), META, LOG, lease_key(name)]
        reply = self._backend.script("replay", keys, [name, cursor + 1], "replay a trigger")
        if reply[0] == b"missing":
            raise InvalidRequestError(f"no trigger named {name!r}")
        if reply[0] == b"compacted":
            horizon = int(reply[1]) + 1
            raise HistoryCompactedError(
                f"revision {cursor + 1} is before the retention horizon (revision {horizon})",
                horizon=horizon,
            )
        self._feed.notify()

    def forget(self, name: str) -> None:
        """Forget ``name`` fleet-wide: cursor, lease and dead letters."""
        keys = [trigger_key(name), lease_key(name), parked_key(name), LOG, TRIGGERS]
        self._backend.script("delete_trigger", keys, [name], "delete a trigger")

    def names(self) -> list[str]:
        """Every trigger the fleet knows, and those registered here."""
        raw = self._backend.run("list triggers", lambda c: c.smembers(TRIGGERS))
        with self._lock:
            local = set(self._held)
        return sorted(local | {decode_name(r) for r in raw})

    def _hashes(self, names: list[str]) -> list[tuple[dict[bytes, bytes], int]]:
        """Per name: its trigger hash and how many dead letters it has."""

        def read(c: Any) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(trigger_key(name))
                pipe.hlen(parked_key(name))
            return list(pipe.execute())

        raw = self._backend.run("read trigger cursors", read) if names else []
        return [(raw[i], int(raw[i + 1])) for i in range(0, len(raw), 2)]

    def known(self) -> dict[str, KnownTrigger]:
        """Every trigger of the fleet, with the cursor and the number of dead letters."""
        names = self.names()
        return {
            name: KnownTrigger(int(fields.get(b"cursor", 0)), parked, None)
            for name, (fields, parked) in zip(names, self._hashes(names), strict=True)
        }

    def _lease_value(self, name: str) -> bytes | None:
        key = lease_key(name)
        value: bytes | None = self._backend.run("read a lease", lambda c: c.get(key))
        return value

    def fleet_status(self, head: int) -> dict[str, dict[str, Any]]:
        """Per trigger, what the whole fleet does: lease holder and heartbeat age."""
        names = self.names()
        now = time.time_ns() // 1_000_000
        result = {}
        for name, (fields, parked) in zip(names, self._hashes(names), strict=True):
            holder = self._lease_value(name)
            beats = [int(v) for k, v in fields.items() if k.startswith(b"hb:")]
            cursor = int(fields.get(b"cursor", 0))
            result[name] = {
                "cursor": cursor,
                "lag": max(head - cursor, 0),
                "parked": parked,
                "holder": holder.decode() if holder else None,
                "heartbeat_age_ms": now - max(beats) if beats else None,
            }
        return result

    def _check_known(self, name: str) -> None:
        if name in self._held:
            return
        if not self._backend.run("read trigger", lambda c: c.exists(trigger_key(name))):
            raise InvalidRequestError(f"no trigger named {name!r}")

    def parked(self, name: str) -> list[dict[str, Any]]:
        """The dead letters of ``name``, oldest first."""
        self._check_known(name)
        raw = self._backend.run("read dead letters", lambda c: c.hvals(parked_key(name)))
        return sorted((json.loads(v) for v in raw), key=lambda p: int(p["revision"]))

    def drop_parked(self, name: str, revision: int | None) -> int:
        """Forget dead letters (all, or one revision); returns how many."""
        self._check_known(name)
        key = parked_key(name)
        if revision is not None:
            return int(
                self._backend.run("drop a dead letter", lambda c: c.hdel(key, str(revision)))
            )

        def drop(c: Any) -> int:
            pipe = c.pipeline(transaction=True)
            pipe.hlen(key)
            pipe.delete(key)
            return int(pipe.execute()[0])

        return int(self._backend.run("drop dead letters", drop))

    def unpark(self, name: str, letter: dict[str, Any], writes: list[Write]) -> bool:
        """Take the letter and commit the writes in one script (only if it is still there)."""
        fence = Fence(name, "", park_mode="take", park_field=str(letter["revision"]))
        return self._writer.commit_handler(writes, fence) == "ok"

    def update_parked(self, name: str, letter: dict[str, Any]) -> None:
        """Store the new error and attempt count of a letter that failed again."""
        value = {str(letter["revision"]): json.dumps(letter).encode()}
        self._backend.run("update a dead letter", lambda c: c.hset(parked_key(name), mapping=value))

    def pin(self, registered: Collection[str]) -> int | None:
        """The lowest cursor of a trigger some process has registered (fleet-wide)."""
        names = self.names()
        now = time.time_ns() // 1_000_000
        alive = []
        for fields, _ in self._hashes(names):
            beats = [int(v) for k, v in fields.items() if k.startswith(b"hb:")]
            if beats and now - max(beats) < 3 * self.lease_ms:
                alive.append(int(fields.get(b"cursor", 0)))
        return min(alive) if alive else None

    def close(self) -> None:
        """Stop the keeper and the watcher (the triggers were unregistered)."""
        self._closing.set()
        self._feed.notify()
        for thread in self._helpers:
            thread.join()
