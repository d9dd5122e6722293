"""The redis adapter: :class:`RedisStore`, the same API as :class:`evstate.Store` over Redis.

Any number of processes on any number of machines may open a ``RedisStore`` on the same
Redis database; together they behave as one store (docs/scaling.md):

- current state in the iii engine's layout (hash ``state:<scope>``, field = key, value =
  compact JSON text), so an iii engine configured with the same Redis reads it;
- every write is ONE Lua script that changes the hash, takes the next revision and appends
  the event to the stream ``evstate:log`` (entry ID = revision): atomic, gap-free, ordered;
- ``update`` applies the iii op rules inside Redis (the ``UPDATE`` function) where it can
  reproduce the Python engine exactly, else in Python with compare-and-set, so concurrent
  updates from every process are exact;
- history, ``at()``, ``restore_to()`` and retention read the stream and snapshots kept in
  Redis; triggers are consumer groups fenced by leases (:mod:`evstate.backends.redis.triggers`).

A write returns only after Redis executed it; how durable it is then is Redis's
``appendfsync`` setting (``always``: fsynced before the reply). An unreachable Redis raises
:class:`~evstate.backends.redis.client.BackendUnavailableError`; the store reconnects by itself.
"""

from __future__ import annotations

import builtins
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from evstate.backends.file.restore import DIRECTORY_RESTORE
from evstate.backends.redis.client import Backend, dump_value, load_value
from evstate.backends.redis.cursors import RedisCursors
from evstate.backends.redis.expiry import RedisExpiry
from evstate.backends.redis.reads import RedisReads
from evstate.backends.redis.scripts import FORMAT_VERSION, META, SNAPSHOTS
from evstate.backends.redis.timeline import CHUNK_KEYS, RedisTimeline, to_scopes
from evstate.backends.redis.writes import Committed, Writer
from evstate.config import Config
from evstate.core.arguments import check_name
from evstate.core.audit import AuditMethods
from evstate.core.batch import BatchMethods
from evstate.core.feed import RecordFeed
from evstate.core.lifecycle import StoreBase, wall_clock_ms
from evstate.core.listing import Listings
from evstate.core.replay import Scopes
from evstate.core.retention import retention_cutoff
from evstate.core.triggers.api import TriggerMethods
from evstate.core.triggers.manager import TriggerManager
from evstate.core.writes import (
    Write,
    check_ttl,
    check_value,
    encode_checked,
    update_result,
)
from evstate.errors import ConfigError, StorageError
from evstate.events import EventRecord
from evstate.ops import parse_ops
from evstate.values import validate_value

__all__ = [
    "DEFAULT_LEASE_MS",
    "PERIODIC_SLACK",
    "RedisStore",
    "open_redis",
]

log = logging.getLogger("evstate")
DEFAULT_LEASE_MS = 5000
PERIODIC_SLACK = 1000  # background compaction waits until it can drop this many events


class RedisStore(StoreBase, BatchMethods, RedisExpiry, RedisReads, AuditMethods, TriggerMethods):
    """An evstate store kept in Redis and shared by every process that opens it.

    Same methods, results and errors as :class:`evstate.Store`; thread-safe. Reads go to
    Redis (so they see every process's writes). Values in and out are copies.

    Differences (docs/scaling.md): ``path`` is ``None``; ``flush()`` has nothing to do;
    ``list_values`` has Redis's hash order (insertion order only while a scope holds at
    most 128 keys); ``restore_to`` writes a file store directory; ``triggers_enabled`` and
    ``trigger_status()["registered"]`` are per process; storage failures raise
    ``BackendUnavailableError`` (a ``StorageError``) when Redis is unreachable.
    """

    _restore_writer = DIRECTORY_RESTORE

    def __init__(
        self,
        config: Config,
        *,
        lease_ms: int = DEFAULT_LEASE_MS,
        connect_timeout: float = 2.0,
        socket_timeout: float = 10.0,
    ) -> None:
        """Connect to ``config.redis_url`` and prepare the database (use :func:`open_redis`).

        ``lease_ms`` is how long a crashed process keeps its triggers before another takes
        them over.

        Raises:
            ConfigError: ``config.adapter`` is not ``redis``.
            BackendUnavailableError: Redis cannot be reached.
            StorageError: the database holds an evstate layout of another version.
        """
        if config.adapter != "redis":
            raise ConfigError([f"RedisStore needs adapter 'redis', got {config.adapter!r}"])
        self._config = config
        self._clock = wall_clock_ms
        self._closed = False
        self._close_lock = threading.Lock()
        self._last_revision = 0
        self._backend = Backend(
            config.redis_url, connect_timeout=connect_timeout, socket_timeout=socket_timeout
        )
        try:
            status, version = self._backend.script(
                "init", [META, SNAPSHOTS], [FORMAT_VERSION, CHUNK_KEYS], "prepare the database"
            )
            if status == b"exists" and version.decode() != FORMAT_VERSION:
                raise StorageError(
                    f"Redis at {self._backend.safe_url} holds evstate layout version "
                    f"{version.decode()}; this evstate reads version {FORMAT_VERSION}"
                )
            if status == b"created" and int(version):
                log.info("evstate: adopted %s existing keys as snapshot 0", int(version))
        except BaseException:
            self._backend.close()
            raise
        self._writer = Writer(self._backend)
        self._listings = Listings(config.max_open_listings, config.listing_idle_ms)
        self._timeline = self._source = RedisTimeline(self._backend)
        self._feed = RecordFeed(0)  # wake-ups only: events are read from the stream
        self._cursors = RedisCursors(self._backend, self._writer, self._feed, lease_ms)
        self._triggers = TriggerManager(self, self._cursors, enabled=config.triggers_enabled)
        self._start_maintenance("evstate-redis-maintenance")
        self._start_expirer()

    # ---- properties -----------------------------------------------------------------

    @property
    def path(self) -> None:
        """Always ``None``: the data is in Redis."""
        return None

    @property
    def url(self) -> str:
        """The Redis URL, without its password."""
        return self._backend.safe_url

    @property
    def revision(self) -> int:
        """The newest revision of the whole fleet (read from Redis; the last known after close)."""
        if self._closed:
            return self._last_revision
        return self._head()

    @property
    def recovery_notes(self) -> builtins.list[str]:
        """Always empty: Redis recovers its own data."""
        return []

    def _head(self) -> int:
        head = self._timeline.head()
        self._last_revision = max(self._last_revision, head)
        return head

    # ---- writes ---------------------------------------------------------------------

    def _written(self, done: Committed) -> None:
        self._last_revision = max(self._last_revision, done.revision)
        self._feed.notify()

    def set(self, scope: str, key: str, value: Any, *, ttl_ms: int | None = None) -> dict[str, Any]:
        """Replace the value of ``scope/key``; returns ``{"old_value", "new_value"}``.

        ``ttl_ms`` as for ``Store.set`` (deadlines use Redis's clock).

        Raises:
            InvalidRequestError, InvalidValueError, ValueTooLargeError: nothing written.
            BackendUnavailableError, StorageError, StoreClosedError.
        """
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        if ttl_ms is not None:
            check_ttl(ttl_ms)
        check_value(value, self._config.max_value_bytes)
        new = dump_value(value)
        done = self._writer.put(scope, key, new, ttl="" if ttl_ms is None else str(ttl_ms))
        self._written(done)
        if ttl_ms is not None:
            self._wake_expirer()
        old = done.olds[0]
        return {
            "old_value": None if old is None else load_value(old),
            "new_value": json.loads(new),
        }

    def update(self, scope: str, key: str, ops: Any) -> dict[str, Any]:
        """Apply update ops to ``scope/key`` atomically (the iii engine's rules).

        Returns ``{"old_value", "new_value"}`` plus ``"errors"`` when an op failed.

        Raises:
            InvalidRequestError: malformed ops (nothing written).
            BackendUnavailableError, StorageError, StoreClosedError.
        """
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        parsed = parse_ops(ops)
        done, new, errors = self._writer.update(scope, key, parsed)
        self._written(done)
        old = done.olds[0]
        return update_result(None if old is None else load_value(old), json.loads(new), errors)

    def compare_and_set(
        self, scope: str, key: str, expected: Any, value: Any, *, ttl_ms: int | None = None
    ) -> dict[str, Any]:
        """Set ``scope/key`` to ``value`` only if it holds ``expected`` (see ``Store``).

        Returns ``{"swapped": True}``, or ``{"swapped": False, "current": ...}`` (nothing
        written). Atomic across the fleet: the script writes only if the key still holds
        the text that was compared.
        """
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        if expected is not None:
            validate_value(expected, where="expected")
        if ttl_ms is not None:
            check_ttl(ttl_ms)
        check_value(value, self._config.max_value_bytes)
        ttl = "" if ttl_ms is None else str(ttl_ms)
        done, old = self._writer.compare_and_set(scope, key, expected, dump_value(value), ttl)
        if done is None:
            return {"swapped": False, "current": None if old is None else load_value(old)}
        self._written(done)
        if ttl_ms is not None:
            self._wake_expirer()
        return {"swapped": True}

    def _commit_batch(self, writes: Sequence[Write]) -> builtins.list[EventRecord]:
        self._check_open()
        _status, records = self._writer.commit_writes(writes)
        if records:
            self._last_revision = max(self._last_revision, records[-1].revision)
            self._feed.notify()
        if any(write.ttl_ms is not None for write in writes):
            self._wake_expirer()
        return records

    def delete(self, scope: str, key: str) -> Any:
        """Delete ``scope/key``; returns the deleted value or ``None`` (an event either way)."""
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        done = self._writer.put(scope, key, None)
        self._written(done)
        old = done.olds[0]
        return None if old is None else load_value(old)

    # ---- what triggers and the audit read ----------------------------------------------

    def _encode_checked(self, value: Any) -> bytes:
        return encode_checked(value, self._config.max_value_bytes)

    def _visible_revision(self) -> int:
        return self._head()

    def _records(self, low: int, high: int) -> Iterator[EventRecord]:
        return self._timeline.scan(low, high)

    def _oldest_revision(self) -> int:
        return self._timeline.oldest_revision()

    def _audit_head(self) -> int:
        return self._head()

    def _live_state(self) -> tuple[int, Scopes]:
        head, texts = self._timeline.live_state()
        return head, to_scopes(texts)

    def trigger_fleet_status(self) -> dict[str, dict[str, Any]]:
        """What the whole fleet does with each trigger (beyond :meth:`trigger_status`).

        Per trigger: ``cursor``, ``lag``, ``parked``, ``holder`` (the lease value) and
        ``heartbeat_age_ms`` (``None``: no process has it registered).
        """
        return self._cursors.fleet_status(self._head())

    # ---- snapshots and retention ----------------------------------------------------

    def snapshot(self) -> int:
        """Write a snapshot of the state at the current head into Redis; returns its revision.

        Built by replaying the stream from the previous snapshot, so it is exact even while
        other processes write; the live hashes are not read. Returns the head unchanged when
        the newest snapshot already covers it.
        """
        self._check_open()
        return self._timeline.snapshot()

    def _retention_cutoff(self) -> int:
        """Newest revision the retention policy lets go of (0: keep everything).

        Triggers registered by any process (heartbeat within 3 leases) pin their cursors.
        """
        seconds, micros = self._backend.run("read time", lambda c: c.time())
        now = int(seconds) * 1000 + int(micros) // 1000  # the clock the events carry
        return retention_cutoff(
            self._config.retention,
            self._head(),
            now,
            self._timeline.first_revision_from_time,
            self._triggers.pin(),
        )

    def compact(self) -> dict[str, Any]:
        """Apply the retention policy now: history older than it allows is deleted.

        The state at the cutoff revision becomes a snapshot (the new horizon); the stream
        entries at or below it and older snapshots are deleted. Returns ``base``,
        ``events_deleted``, ``snapshots_deleted``, ``segments_deleted`` (always 0) and the
        new ``horizon_revision``.
        """
        self._check_open()
        result = self._timeline.compact(self._retention_cutoff(), slack=1)
        result["horizon_revision"] = self._timeline.horizon()
        return result

    def _maintenance_tick(self) -> None:
        try:
            horizon = self._timeline.horizon()
            cutoff = self._retention_cutoff()
            slack = max(PERIODIC_SLACK, (self._head() - horizon) // 10)
            if cutoff - horizon >= slack:
                self._timeline.compact(cutoff, slack=slack, wait=0)
        except StorageError as exc:  # unavailable or locked: the next tick tries again
            log.info("evstate: background compaction skipped: %s", exc)

    def stats(self) -> dict[str, Any]:
        """Numbers about the store (the file store's keys, plus ``events_in_log``).

        ``segments`` is 0; ``log_bytes`` is Redis's estimate of the stream's memory;
        ``durable_revision`` equals ``revision`` (Redis acknowledged every event).
        """
        self._check_open()
        head = self._head()
        scopes = self._scope_sizes()
        result: dict[str, Any] = {
            "revision": head,
            "durable_revision": head,
            "keys": sum(scopes.values()),
            "scopes": len(scopes),
        }
        result.update(self._timeline.stats())
        return result

    # ---- lifecycle ------------------------------------------------------------------

    def flush(self) -> None:
        """Nothing to do: every returned write was already executed by Redis."""
        self._check_open()

    def _stop_maintenance(self) -> None:
        super()._stop_maintenance()
        self._stop_expirer()

    def _close_storage(self) -> None:
        self._backend.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"revision={self._last_revision}"
        return f"<evstate.RedisStore {self.url} {state}>"


def open_redis(redis_url: str, *, lease_ms: int = DEFAULT_LEASE_MS, **options: Any) -> RedisStore:
    """Open a :class:`RedisStore` at ``redis_url``; ``options`` as for ``evstate.open``.

    Raises:
        ConfigError: a bad URL or option. BackendUnavailableError: Redis is unreachable.
    """
    config = Config(adapter="redis", redis_url=redis_url)
    return RedisStore(config.replace(**options) if options else config, lease_ms=lease_ms)
