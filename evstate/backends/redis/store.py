"""The redis adapter: :class:`RedisStore`, the same API as :class:`evstate.Store` over Redis.

Any number of processes on any number of machines may open a ``RedisStore`` on the same
Redis database; together they behave as one store (docs/scaling.md):

- current state in the iii engine's layout (hash ``state:<scope>``, field = key, value =
  compact JSON text), so an iii engine configured with the same Redis reads it;
- every write is ONE Lua script that changes the hash, takes the next revision and appends
  the event to the stream ``evstate:log`` (entry ID = revision): atomic, gap-free, ordered;
- ``update`` applies the iii op rules in Python (the one implementation) with
  compare-and-set, so concurrent updates from every process are exact;
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
from collections.abc import Mapping
from typing import Any

from evstate.config import Config
from evstate.errors import ConfigError, StorageError, StoreClosedError, ValueTooLargeError
from evstate.ops import parse_ops
from evstate.backends.redis.client import Backend, decode_name, dump_value, load_value
from evstate.backends.redis.history import RedisHistoryMethods, check_name
from evstate.backends.redis.timeline import CHUNK_KEYS, RedisTimeline
from evstate.backends.redis.scripts import FORMAT_VERSION, META, SNAPSHOTS, STATE_PREFIX, state_key
from evstate.backends.redis.triggers import Handler, RedisTriggerManager
from evstate.backends.redis.writes import Committed, Writer
from evstate.core.triggers import Trigger, register_or_decorate
from evstate.values import encode_value, validate_value

__all__ = ["DEFAULT_LEASE_MS", "RedisStore", "open_redis"]

log = logging.getLogger("evstate")
DEFAULT_LEASE_MS = 5000


class RedisStore(RedisHistoryMethods):
    """An evstate store kept in Redis and shared by every process that opens it.

    Same methods, results and errors as :class:`evstate.Store`; thread-safe. Reads go to
    Redis (so they see every process's writes). Values in and out are copies.

    Differences (docs/scaling.md): ``path`` is ``None``; ``flush()`` has nothing to do;
    ``list_values`` has Redis's hash order (insertion order only while a scope holds at
    most 128 keys); ``restore_to`` writes a file store directory; ``triggers_enabled`` and
    ``trigger_status()["registered"]`` are per process; storage failures raise
    ``BackendUnavailableError`` (a ``StorageError``) when Redis is unreachable.
    """

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
        self._timeline = RedisTimeline(self._backend)
        self._triggers = RedisTriggerManager(
            self,
            self._backend,
            self._writer,
            enabled=config.triggers_enabled,
            lease_ms=lease_ms,
        )
        self._stop = threading.Event()
        self._maintainer = threading.Thread(
            target=self._maintenance_loop, name="evstate-redis-maintenance", daemon=True
        )
        self._maintainer.start()

    # ---- properties -----------------------------------------------------------------

    @property
    def config(self) -> Config:
        """The configuration this store was opened with."""
        return self._config

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
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def recovery_notes(self) -> builtins.list[str]:
        """Always empty: Redis recovers its own data."""
        return []

    def _head(self) -> int:
        head = self._timeline.head()
        self._last_revision = max(self._last_revision, head)
        return head

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")

    # ---- writes ---------------------------------------------------------------------

    def _written(self, done: Committed) -> None:
        self._last_revision = max(self._last_revision, done.revision)
        self._triggers.notify()

    def set(self, scope: str, key: str, value: Any) -> dict[str, Any]:
        """Replace the value of ``scope/key``; returns ``{"old_value", "new_value"}``.

        Raises:
            InvalidRequestError, InvalidValueError, ValueTooLargeError: nothing written.
            BackendUnavailableError, StorageError, StoreClosedError.
        """
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        validate_value(value)
        new = dump_value(value)
        limit = self._config.max_value_bytes
        if limit is not None and len(new) > limit:
            raise ValueTooLargeError(
                f"value of {len(new)} bytes exceeds the configured max_value_bytes limit of {limit}"
            )
        done = self._writer.put(scope, key, new)
        self._written(done)
        old = done.olds[0]
        return {
            "old_value": None if old is None else load_value(old),
            "new_value": json.loads(new),
        }

    def update(self, scope: str, key: str, ops: Any) -> dict[str, Any]:
        """Apply update ops to ``scope/key`` atomically (iii semantics, reference §3).

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
        result: dict[str, Any] = {
            "old_value": None if old is None else load_value(old),
            "new_value": json.loads(new),
        }
        if errors:
            result["errors"] = errors
        return result

    def delete(self, scope: str, key: str) -> Any:
        """Delete ``scope/key``; returns the deleted value or ``None`` (an event either way)."""
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        done = self._writer.put(scope, key, None)
        self._written(done)
        old = done.olds[0]
        return None if old is None else load_value(old)

    # ---- reads ----------------------------------------------------------------------

    def _raw_value(self, scope: str, key: str) -> bytes | None:
        """The CBOR encoding of the value (for :class:`~evstate.core.triggers.TriggerContext`)."""
        text = self._hget(scope, key)
        return None if text is None else encode_value(load_value(text))

    def _hget(self, scope: str, key: str) -> bytes | None:
        field = key.encode("utf-8", "surrogatepass")
        text: bytes | None = self._backend.run("read", lambda c: c.hget(state_key(scope), field))
        return text

    def get(self, scope: str, key: str) -> Any:
        """The value of ``scope/key`` (a fresh copy), or ``None`` if it does not exist."""
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        text = self._hget(scope, key)
        return None if text is None else load_value(text, f"{scope}/{key}")

    def _hash(self, scope: str) -> dict[bytes, bytes]:
        raw: dict[bytes, bytes] = self._backend.run("read", lambda c: c.hgetall(state_key(scope)))
        return raw

    def list(self, scope: str) -> dict[str, Any]:
        """Every ``key: value`` of ``scope``, in sorted key order (``{}`` if none)."""
        self._check_open()
        check_name("scope", scope)
        items = {decode_name(k): v for k, v in self._hash(scope).items()}
        return {key: load_value(items[key], f"{scope}/{key}") for key in sorted(items)}

    def list_values(self, scope: str) -> builtins.list[Any]:
        """The values of ``scope`` in Redis's hash order (the engine's ``state::list``)."""
        self._check_open()
        check_name("scope", scope)
        return [load_value(v, scope) for v in self._hash(scope).values()]

    def _scopes(self) -> builtins.list[str]:
        def scan(c: Any) -> set[bytes]:
            return set(c.scan_iter(match=STATE_PREFIX + b"*", count=1000, _type="hash"))

        keys = self._backend.run("list scopes", scan)
        return sorted(decode_name(k[len(STATE_PREFIX) :]) for k in keys)

    def _scope_sizes(self) -> dict[str, int]:
        scopes = self._scopes()

        def sizes(c: Any) -> builtins.list[Any]:
            pipe = c.pipeline(transaction=False)
            for scope in scopes:
                pipe.hlen(state_key(scope))
            return builtins.list(pipe.execute())

        counts = self._backend.run("count keys", sizes) if scopes else []
        return {s: int(n) for s, n in zip(scopes, counts, strict=True) if n}

    def list_groups(self) -> dict[str, builtins.list[str]]:
        """``{"groups": [...]}``: sorted scopes holding at least one key (``SCAN state:*``)."""
        self._check_open()
        return {"groups": self._scopes()}

    def call(self, function_id: str, payload: Mapping[str, Any] | None = None) -> Any:
        """Call a state function by id (``state::set``, ``state.get``, ...), as ``Store.call``."""
        from evstate.core.functions import call_function

        return call_function(self, function_id, {} if payload is None else payload)

    # ---- triggers ---------------------------------------------------------------------

    def trigger(
        self,
        name: str,
        handler: Handler | None = None,
        *,
        scope: str | None = None,
        key: str | None = None,
        condition: Handler | None = None,
        start: str | int = "latest",
    ) -> Any:
        """Register a durable trigger in this process; usable as a decorator.

        Every process that registers ``name`` shares its delivery: each event goes to one
        of them (the lease holder), in revision order. Contract as ``Store.trigger``.
        """
        self._check_open()

        def register(fn: Handler) -> Trigger:
            return self._triggers.register(
                name, fn, scope=scope, key=key, condition=condition, start=start
            )

        return register_or_decorate(register, handler)

    def unregister_trigger(self, name: str, *, wait: bool = True) -> None:
        """Stop delivering ``name`` in this process; its cursor is kept."""
        self._triggers.unregister(name, wait=wait)

    def delete_trigger(self, name: str) -> None:
        """Forget ``name`` fleet-wide: cursor, group and dead letters."""
        self._triggers.delete(name)

    def replay_trigger(self, name: str, from_revision: int) -> None:
        """Move ``name``'s cursor so delivery continues at ``from_revision`` (fleet-wide)."""
        self._triggers.replay(name, from_revision)

    def wait_for_triggers(self, revision: int | None = None, timeout: float | None = None) -> None:
        """Return once every trigger registered here has been processed up to ``revision``."""
        self._triggers.wait(self._head() if revision is None else revision, timeout)

    def trigger_status(self) -> dict[str, dict[str, Any]]:
        """Per known trigger: the file store's fields; ``cursor`` is the fleet's."""
        return self._triggers.status(self._head())

    def trigger_fleet_status(self) -> dict[str, dict[str, Any]]:
        """What the whole fleet does with each trigger (beyond :meth:`trigger_status`).

        Per trigger: ``cursor``, ``lag``, ``parked``, ``holder`` (the lease value),
        ``pending`` (read, not yet acknowledged), ``consumers`` and ``heartbeat_age_ms``
        (``None``: no process has it registered).
        """
        return self._triggers.fleet_status(self._head())

    def parked_events(self, name: str) -> builtins.list[dict[str, Any]]:
        """The dead letters of ``name``: ``revision``, ``event``, ``error``, ``attempts``."""
        return self._triggers.parked(name)

    def replay_parked(self, name: str, revision: int | None = None) -> int:
        """Run ``name``'s handler again on its parked events (all, or one); returns successes."""
        return self._triggers.replay_parked(name, revision, self._timeline.entry)

    def drop_parked(self, name: str, revision: int | None = None) -> int:
        """Forget ``name``'s parked events (all, or one); returns how many."""
        return self._triggers.drop_parked(name, revision)

    @property
    def triggers_enabled(self) -> bool:
        """Whether this process delivers triggers; set it to pause or resume (live)."""
        return self._triggers.enabled

    @triggers_enabled.setter
    def triggers_enabled(self, enabled: bool) -> None:
        self._triggers.set_enabled(enabled)

    # ---- lifecycle ------------------------------------------------------------------

    def flush(self) -> None:
        """Nothing to do: every returned write was already executed by Redis."""
        self._check_open()

    def close(self) -> None:
        """Stop triggers (handing their leases over) and disconnect. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._maintainer is not threading.current_thread():
            self._maintainer.join()
        try:
            self._triggers.close()
        except Exception:
            log.exception("evstate: closing triggers failed")
        finally:
            self._backend.close()

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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
