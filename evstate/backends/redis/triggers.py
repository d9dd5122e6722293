"""Durable state triggers across a fleet of processes sharing one Redis.

Each trigger name is a consumer group on ``evstate:log`` plus a **lease**
(``evstate:lease:<name>``, a token with a TTL). Every process that registers the name runs a
runner thread, but only the lease holder reads and delivers, so each event reaches one
process, in revision order, one at a time. A keeper thread renews the held leases every
``lease_ms / 3``; if the holder dies, its lease expires and another process takes over.

Fencing: the holder reads (:data:`~evstate.backends.redis.scripts.FETCH`) and commits
(:data:`~evstate.backends.redis.scripts.COMMIT`) only while its token is the lease value, both checked
inside the scripts. A new holder first claims the whole pending list of the group (XAUTOCLAIM,
ID order), i.e. what a dead or fenced-off holder had read but not acknowledged, then reads new
entries. So delivery is in order and **at least once** for external effects; writes through
``event.store`` are committed in one script together with the XACK and the cursor move, so
they happen **exactly once**. Semantics otherwise as docs/triggers.md (retries, dead letters).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, cast

from evstate.errors import HistoryCompactedError, InvalidRequestError, StorageError
from evstate.backends.redis.client import Backend, BackendUnavailableError, LogEntry, parse_entry
from evstate.backends.redis.scripts import LOG, META, TRIGGERS, lease_key, parked_key, trigger_key
from evstate.backends.redis.trigger_admin import (
    Handler,
    Runner,
    TriggerAdminMethods,
    TriggerHost,
    call_handler,
    trigger_record,
)
from evstate.backends.redis.writes import Fence, Writer
from evstate.core.triggers import Trigger, TriggerContext, TriggerEvent, check_trigger_args

__all__ = ["Handler", "RedisTriggerManager"]

log = logging.getLogger("evstate")
BATCH = 256
ACK_EVERY = 0.1  # seconds between acknowledgements of events that wrote nothing
WATCH_BLOCK_MS = 250  # XREAD BLOCK of the wake-up watcher (also bounds how long close waits)


class _LeaseLost(Exception):
    """The trigger's lease is no longer held here: drop what is in hand."""


class RedisTriggerManager(TriggerAdminMethods):
    """Registry, runners, leases and dead letters of a redis store's triggers."""

    def __init__(
        self, host: TriggerHost, backend: Backend, writer: Writer, *, enabled: bool, lease_ms: int
    ) -> None:
        self._host = host
        self._backend = backend
        self._writer = writer
        self._enabled = enabled
        self.lease_ms = lease_ms
        self.max_attempts = 5
        self.backoff = 0.05
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._runners: dict[str, Runner] = {}
        self._lock = threading.RLock()
        self.feed = threading.Condition()
        self._wakeups = 0
        self._closing = threading.Event()
        self._helpers: list[threading.Thread] = []

    # ---- registration -----------------------------------------------------------------

    def register(
        self,
        name: str,
        handler: Handler,
        *,
        scope: str | None,
        key: str | None,
        condition: Handler | None,
        start: str | int,
    ) -> Trigger:
        """Register ``name`` in this process; see ``Store.trigger`` for the contract."""
        check_trigger_args(name, handler, scope=scope, key=key, condition=condition)
        if start not in ("latest", "earliest") and not (type(start) is int and start >= 1):
            raise InvalidRequestError(
                f"start must be 'latest', 'earliest' or a revision >= 1, got {start!r}"
            )
        with self._lock:
            runner = self._runners.get(name)
            if runner is not None and runner.thread is not None:
                raise InvalidRequestError(f"trigger {name!r} is already registered")
            reply = self._backend.script(
                "register",
                [trigger_key(name), META, LOG, TRIGGERS],
                [name, start, time.time_ns() // 1_000_000, self.consumer],
                "register a trigger",
            )
            status, *numbers = [r.decode() for r in reply]
            if status == "compacted":
                oldest = int(numbers[0]) + 1
                raise HistoryCompactedError(
                    f"revision {start} is before the retention horizon (revision {oldest})",
                    horizon=oldest,
                )
            cursor, horizon = int(numbers[0]), int(numbers[1])
            if cursor < horizon:
                raise HistoryCompactedError(
                    f"trigger {name!r} stopped at revision {cursor}, but history before "
                    f"revision {horizon + 1} was compacted: replay_trigger() from a retained "
                    f"revision, or delete_trigger() and register it again",
                    horizon=horizon + 1,
                )
            runner = self._runners.get(name) or Runner(name)
            self._runners[name] = runner
            runner.handler, runner.condition, runner.scope, runner.key = (
                handler,
                condition,
                scope,
                key,
            )
            runner.stop, runner.holder = threading.Event(), False
            runner.thread = threading.Thread(
                target=self._run, args=(runner, runner.stop), name=f"evstate-trigger-{name}"
            )
            runner.thread.daemon = True
            runner.thread.start()
            self._start_helpers()
        return Trigger(cast(Any, self), name)

    def unregister(self, name: str, *, wait: bool = True) -> None:
        """Stop delivering ``name`` in this process; keep its cursor; hand over the lease."""
        with self._lock:
            runner = self._runners.get(name)
            if runner is None or runner.thread is None:
                return
            thread, runner.thread = runner.thread, None
            runner.stop.set()
        self.notify()
        if wait and thread is not threading.current_thread():
            thread.join()
        self._release(runner)
        try:
            field = f"hb:{self.consumer}"
            self._backend.run("unregister", lambda c: c.hdel(trigger_key(name), field))
        except StorageError as exc:
            log.warning("evstate: trigger %r: could not clear its heartbeat: %s", name, exc)

    def delete(self, name: str) -> None:
        """Unregister ``name`` and forget its cursor, group and dead letters (fleet-wide)."""
        self.unregister(name)
        keys = [trigger_key(name), lease_key(name), parked_key(name), LOG, TRIGGERS]
        self._backend.script("delete_trigger", keys, [name], "delete a trigger")
        with self._lock:
            self._runners.pop(name, None)

    def replay(self, name: str, from_revision: int) -> None:
        """Move ``name``'s group and cursor so delivery continues at ``from_revision``."""
        if type(from_revision) is not int or from_revision < 1:
            raise InvalidRequestError("from_revision must be an int >= 1")
        keys = [trigger_key(name), META, LOG, lease_key(name)]
        reply = self._backend.script("replay", keys, [name, from_revision], "replay a trigger")
        if reply[0] == b"missing":
            raise InvalidRequestError(f"no trigger named {name!r}")
        if reply[0] == b"compacted":
            oldest = int(reply[1]) + 1
            raise HistoryCompactedError(
                f"revision {from_revision} is before the retention horizon (revision {oldest})",
                horizon=oldest,
            )
        runner = self._runners.get(name)
        if runner is not None:
            runner.holder = False
        self.notify()

    # ---- the runner -------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether this process delivers (``triggers_enabled``)."""
        return self._enabled

    def set_enabled(self, enabled: bool) -> None:
        """Pause or resume delivery in this process (a paused process hands its leases over)."""
        self._enabled = bool(enabled)
        self.notify()

    def notify(self) -> None:
        """Wake the runners: new events, or a lease may be free."""
        with self.feed:
            self._wakeups += 1
            self.feed.notify_all()

    def _idle(self, stop: threading.Event, seconds: float, seen: int | None = None) -> None:
        """Wait for a wake-up, unless one came since ``seen`` (no lost wake-ups)."""
        with self.feed:
            if not stop.is_set() and (seen is None or seen == self._wakeups):
                self.feed.wait(seconds)

    def _run(self, runner: Runner, stop: threading.Event) -> None:
        loops: dict[str, asyncio.AbstractEventLoop] = {}
        try:
            while not stop.is_set() and not self._closing.is_set():
                try:
                    if not self._step(runner, stop, loops):
                        break
                except _LeaseLost:
                    runner.holder = False
                except BackendUnavailableError as exc:
                    runner.last_error = f"store unavailable: {exc}"
                    stop.wait(0.5)
                except StorageError as exc:
                    if "NOGROUP" in str(exc):
                        break
                    runner.last_error = f"store failed: {exc}"
                    log.error("evstate: trigger %r: %s", runner.name, exc)
                    stop.wait(1.0)
            else:
                return  # unregistered or closing
            runner.last_error = "the trigger was deleted by another process"
            log.error("evstate: trigger %r: %s", runner.name, runner.last_error)
            with self._lock:
                if runner.thread is threading.current_thread():
                    runner.thread = None  # no longer registered here
        finally:
            self._release(runner)  # hand over at once rather than after the lease expires
            if "loop" in loops:
                loops["loop"].close()

    def _step(
        self, runner: Runner, stop: threading.Event, loops: dict[str, asyncio.AbstractEventLoop]
    ) -> bool:
        """One round: hold the lease, fetch a batch, deliver it. False: stop for good."""
        if not self._enabled:
            self._release(runner)
            self._idle(stop, 0.5)
            return True
        if not runner.holder:
            held = self._lease(runner, "acquire")
            if held < 0:
                return False
            if not held:
                self._idle(stop, self.lease_ms / 3000)
                return True
            runner.holder = True
        seen = self._wakeups
        reply = self._backend.script(
            "fetch",
            [lease_key(runner.name), LOG],
            [self.consumer, runner.name, self.consumer, BATCH],
            "read events",
        )
        if reply[0] == b"lease":
            raise _LeaseLost
        entries, deleted = reply[1], reply[2]
        if deleted:
            runner.last_error = (
                f"{len(deleted)} pending events were compacted before delivery "
                f"(first {deleted[0].decode()})"
            )
            log.error("evstate: trigger %r: %s", runner.name, runner.last_error)
        if not entries:
            if reply[0] == b"new":
                self._idle(stop, 0.5, seen)
            return True
        self._deliver_batch(runner, [parse_entry(i, f) for i, f in entries], stop, loops)
        return True

    def _deliver_batch(
        self,
        runner: Runner,
        entries: list[LogEntry],
        stop: threading.Event,
        loops: dict[str, asyncio.AbstractEventLoop],
    ) -> None:
        acks: list[bytes] = []
        cursor: int | None = None
        last_ack = time.monotonic()
        for entry in entries:
            if stop.is_set() or not self._enabled:
                break
            outcome = self._deliver(runner, entry, stop, loops)
            if outcome is None:
                break  # stopping: this event stays pending and is delivered again later
            acks.append(entry.entry_id)
            cursor = entry.revision
            writes, park = outcome
            if writes or park is not None or time.monotonic() - last_ack > ACK_EVERY:
                fence = Fence(runner.name, self.consumer, acks, cursor)
                if park is not None:
                    fence = fence._replace(
                        park_mode="put", park_field=str(entry.revision), park_value=park
                    )
                if self._writer.commit_handler(writes, fence) != "ok":
                    raise _LeaseLost
                acks, last_ack = [], time.monotonic()
        fence = Fence(runner.name, self.consumer, acks, cursor)
        if acks and self._writer.commit_handler([], fence) != "ok":
            raise _LeaseLost

    def _deliver(
        self,
        runner: Runner,
        entry: LogEntry,
        stop: threading.Event,
        loops: dict[str, asyncio.AbstractEventLoop],
    ) -> tuple[list[tuple[Any, ...]], bytes | None] | None:
        """Run condition and handler (with retries); (writes, dead letter) or None if stopped."""
        if (runner.scope is not None and entry.scope != runner.scope) or (
            runner.key is not None and entry.key != runner.key
        ):
            return [], None
        record = trigger_record(entry)
        attempt = 0
        while True:
            context = TriggerContext(cast(Any, self._host))
            event = TriggerEvent(record, runner.name, context)
            try:
                if runner.condition is None or call_handler(runner.condition, event, loops):
                    assert runner.handler is not None
                    call_handler(runner.handler, event, loops)
                    runner.delivered += 1
                return context.writes, None
            except StorageError:
                raise
            except Exception as exc:
                if stop.is_set():
                    return None
                attempt += 1
                runner.last_error = f"{type(exc).__name__}: {exc}"
                if attempt >= self.max_attempts:
                    log.error(
                        "evstate: trigger %r parked revision %d after %d attempts: %s",
                        runner.name,
                        entry.revision,
                        attempt,
                        runner.last_error,
                    )
                    letter = {
                        "revision": entry.revision,
                        "event": event.to_dict(),
                        "error": runner.last_error,
                        "attempts": attempt,
                        "parked_at": time.time_ns() // 1_000_000,
                    }
                    return [], json.dumps(letter).encode()
                log.warning(
                    "evstate: trigger %r failed on revision %d (attempt %d): %s",
                    runner.name,
                    entry.revision,
                    attempt,
                    runner.last_error,
                )
                if stop.wait(self.backoff * 2 ** (attempt - 1)):
                    return None

    # ---- leases, heartbeats, wake-ups ---------------------------------------------------

    def _lease(self, runner: Runner, mode: str) -> int:
        keys = [lease_key(runner.name), trigger_key(runner.name)]
        holder = f"{socket.gethostname()}:{os.getpid()}"
        args = [self.consumer, self.lease_ms, mode, holder, time.time_ns() // 1_000_000]
        return int(self._backend.script("lease", keys, args, "hold a trigger lease"))

    def _release(self, runner: Runner) -> None:
        if not runner.holder:
            return
        runner.holder = False
        try:
            self._lease(runner, "release")
        except StorageError as exc:  # it expires by itself
            log.warning("evstate: trigger %r: lease not released: %s", runner.name, exc)

    def _keep(self) -> None:
        """Every lease_ms / 3: heartbeats, renew held leases; wake idle runners."""
        while not self._closing.wait(self.lease_ms / 3000):
            with self._lock:
                active = [r for r in self._runners.values() if r.thread is not None]
            for runner in active:
                try:
                    if self._lease(runner, "renew") != 1:
                        runner.holder = False  # lost it: the fences stop its commits anyway
                except StorageError as exc:
                    log.warning("evstate: trigger %r keeper: %s", runner.name, exc)
            self.notify()

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
                    self.notify()
        finally:
            client.close()

    def _start_helpers(self) -> None:
        if self._helpers:
            return
        for target, name in ((self._keep, "keeper"), (self._watch, "watcher")):
            thread = threading.Thread(target=target, name=f"evstate-trigger-{name}", daemon=True)
            thread.start()
            self._helpers.append(thread)

    def close(self) -> None:
        """Stop every runner here (handing the leases over) and the helper threads."""
        for name in list(self._runners):
            self.unregister(name)
        self._closing.set()
        self.notify()
        for thread in self._helpers:
            thread.join()
        self._forget_consumer()

    def _forget_consumer(self) -> None:
        """Remove this process's consumer from groups where it holds nothing pending."""
        with self._lock:
            names = list(self._runners)

        def clean(c: Any) -> None:
            for name in names:
                try:
                    pending = c.xpending_range(LOG, name, "-", "+", 1, consumername=self.consumer)
                    if not pending:
                        c.xgroup_delconsumer(LOG, name, self.consumer)
                except Exception:  # the group may be gone; nothing to clean
                    continue

        with contextlib.suppress(StorageError):
            self._backend.run("clean up consumers", clean)
