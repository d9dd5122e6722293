"""Dead letters, status and waiting for the redis store's triggers (a mixin).

Split from :mod:`evstate.backends.redis.triggers` (the runners and leases) to keep files readable;
:class:`TriggerAdminMethods` relies on the attributes the manager sets up (declared below).
Everything here reads or changes state in Redis, so it is the same from every process.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from evstate.errors import InvalidRequestError, TriggerTimeoutError
from evstate.events import EVENT_TYPE_CODES, EventRecord
from evstate.backends.redis.client import Backend, LogEntry
from evstate.backends.redis.scripts import LOG, TRIGGERS, lease_key, parked_key, trigger_key
from evstate.backends.redis.writes import Fence, Writer
from evstate.core.triggers import TriggerContext, TriggerEvent, call_handler
from evstate.values import encode_value

__all__ = [
    "Handler",
    "Runner",
    "TriggerAdminMethods",
    "TriggerHost",
    "call_handler",
    "trigger_record",
]

Handler = Callable[[Any], Any]


class TriggerHost(Protocol):
    """What the runners need from the store (the :class:`TriggerContext` host)."""

    def _raw_value(self, scope: str, key: str) -> bytes | None: ...
    def list(self, scope: str) -> dict[str, Any]: ...  # noqa: D102


@dataclass(eq=False)
class Runner:
    """A trigger registered in this process (``thread`` is None once unregistered)."""

    name: str
    handler: Handler | None = None
    condition: Handler | None = None
    scope: str | None = None
    key: str | None = None
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    holder: bool = False
    last_error: str | None = None
    delivered: int = 0


def trigger_record(entry: LogEntry) -> EventRecord:
    """The entry as the CBOR record :class:`TriggerEvent` reads."""

    def cbor(text: bytes | None) -> bytes | None:
        return None if text is None else encode_value(json.loads(text))

    return EventRecord(
        entry.revision,
        entry.timestamp,
        EVENT_TYPE_CODES[entry.event_type],
        entry.scope,
        entry.key,
        cbor(entry.old),
        cbor(entry.new),
    )


class TriggerAdminMethods:
    """Dead letters, cursors, status and waiting, over the keys in Redis."""

    _host: TriggerHost
    _backend: Backend
    _writer: Writer
    _runners: dict[str, Runner]
    _lock: threading.RLock
    _enabled: bool
    lease_ms: int

    # ---- dead letters -------------------------------------------------------------------

    def _require(self, name: str) -> None:
        if name in self._runners:
            return
        if not self._backend.run("read trigger", lambda c: c.exists(trigger_key(name))):
            raise InvalidRequestError(f"no trigger named {name!r}")

    def parked(self, name: str) -> list[dict[str, Any]]:
        """The dead letters of ``name``, oldest first."""
        self._require(name)
        raw = self._backend.run("read dead letters", lambda c: c.hvals(parked_key(name)))
        return sorted((json.loads(v) for v in raw), key=lambda p: int(p["revision"]))

    def drop_parked(self, name: str, revision: int | None = None) -> int:
        """Forget dead letters (all, or one revision); returns how many."""
        self._require(name)
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

        return self._backend.run("drop dead letters", drop)

    def replay_parked(self, name: str, revision: int | None, entry: Callable[[int], Any]) -> int:
        """Run the handler again on dead letters, now, in this thread; returns successes.

        A success removes the letter and commits the handler's writes in one step (only if
        the letter is still there, so two processes replaying at once commit once). A failure
        records the new error. ``entry(revision)`` reads the event from the stream.
        """
        runner = self._runners.get(name)
        if runner is None or runner.thread is None or runner.handler is None:
            self._require(name)
            raise InvalidRequestError(f"trigger {name!r} is not registered")
        todo = [p for p in self.parked(name) if revision is None or p["revision"] == revision]
        done = 0
        loops: dict[str, asyncio.AbstractEventLoop] = {}
        try:
            for item in todo:
                found = entry(int(item["revision"]))
                if found is None:
                    continue  # compacted
                context = TriggerContext(cast(Any, self._host))
                event = TriggerEvent(trigger_record(found), name, context)
                try:
                    call_handler(runner.handler, event, loops)
                except Exception as exc:
                    item["error"] = f"{type(exc).__name__}: {exc}"
                    item["attempts"] += 1
                    self._store_letter(name, item)
                    continue
                fence = Fence(name, "", park_mode="take", park_field=str(item["revision"]))
                if self._writer.commit_handler(context.writes, fence) == "ok":
                    done += 1
        finally:
            if "loop" in loops:
                loops["loop"].close()
        return done

    # ---- waiting and status -------------------------------------------------------------

    def _store_letter(self, name: str, item: dict[str, Any]) -> None:
        letter = {str(item["revision"]): json.dumps(item).encode()}
        self._backend.run(
            "update a dead letter", lambda c: c.hset(parked_key(name), mapping=letter)
        )

    def _cursors(self, names: list[str]) -> list[tuple[int, int, bytes | None, int | None]]:
        """Per name: (cursor, parked count, stored last_error, newest heartbeat or None)."""

        def read(c: Any) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(trigger_key(name))
                pipe.hlen(parked_key(name))
            return list(pipe.execute())

        raw = self._backend.run("read trigger cursors", read) if names else []
        result = []
        for i in range(0, len(raw), 2):
            fields: dict[bytes, bytes] = raw[i]
            beats = [int(v) for k, v in fields.items() if k.startswith(b"hb:")]
            result.append(
                (
                    int(fields.get(b"cursor", 0)),
                    int(raw[i + 1]),
                    fields.get(b"last_error"),
                    max(beats) if beats else None,
                )
            )
        return result

    def wait(self, revision: int, timeout: float | None) -> None:
        """Block until every trigger registered here has been processed up to ``revision``.

        Processed by whichever process holds its lease: the cursors are read from Redis.

        Raises:
            TriggerTimeoutError: ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                names = [n for n, r in self._runners.items() if r.thread is not None]
            behind = [
                name
                for name, (cursor, *_) in zip(names, self._cursors(names), strict=True)
                if cursor < revision
            ]
            if not behind:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise TriggerTimeoutError(
                    f"triggers {', '.join(sorted(behind))} did not reach revision "
                    f"{revision} within {timeout} s"
                )
            time.sleep(0.005)

    def names(self) -> list[str]:
        """Every trigger known to the fleet or registered here."""
        raw = self._backend.run("list triggers", lambda c: c.smembers(TRIGGERS))
        with self._lock:
            local = set(self._runners)
        return sorted(local | {r.decode("utf-8", "surrogatepass") for r in raw})

    def status(self, head: int) -> dict[str, dict[str, Any]]:
        """Per known trigger, the file store's fields (``registered`` = here)."""
        names = self.names()
        result = {}
        for name, (cursor, parked, error, _) in zip(names, self._cursors(names), strict=True):
            runner = self._runners.get(name)
            result[name] = {
                "registered": runner is not None and runner.thread is not None,
                "cursor": cursor,
                "lag": max(head - cursor, 0),
                "parked": parked,
                "last_error": runner.last_error if runner else (error.decode() if error else None),
                "delivered": runner.delivered if runner else 0,
                "scope": runner.scope if runner else None,
                "key": runner.key if runner else None,
                "enabled": self._enabled,
            }
        return result

    def fleet_status(self, head: int) -> dict[str, dict[str, Any]]:
        """Per trigger, what the whole fleet does: lease holder, pending, consumers."""
        names = self.names()
        now = time.time_ns() // 1_000_000
        result = {}
        for name, (cursor, parked, _, beat) in zip(names, self._cursors(names), strict=True):

            def read(c: Any, name: str = name) -> list[Any]:
                pipe = c.pipeline(transaction=False)
                pipe.get(lease_key(name))
                pipe.xinfo_groups(LOG)
                return list(pipe.execute(raise_on_error=False))

            holder, groups = self._backend.run("read trigger status", read)
            wanted = name.encode("utf-8", "surrogatepass")
            group: dict[str, Any] = {}
            if isinstance(groups, list):
                group = next((g for g in groups if g["name"] == wanted), {})
            result[name] = {
                "cursor": cursor,
                "lag": max(head - cursor, 0),
                "parked": parked,
                "holder": holder.decode() if holder else None,
                "pending": int(group.get("pending", 0)),
                "consumers": int(group.get("consumers", 0)),
                "heartbeat_age_ms": None if beat is None else now - beat,
            }
        return result

    def min_registered_cursor(self) -> int | None:
        """The lowest cursor of a trigger some process has registered (retention pin)."""
        names = self.names()
        now = time.time_ns() // 1_000_000
        alive = [
            cursor
            for cursor, _, _, beat in self._cursors(names)
            if beat is not None and now - beat < 3 * self.lease_ms
        ]
        return min(alive) if alive else None
