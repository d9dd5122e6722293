"""The redis adapter's connection: error mapping, bounded retries, scripts, value codec.

Every Redis call of the adapter goes through :meth:`Backend.run`, which turns redis-py's
exceptions into evstate's: an unreachable, restarting or read-only Redis raises
:class:`BackendUnavailableError` (a :class:`~evstate.errors.StorageError`) once a few quick
attempts have failed; any other Redis failure raises ``StorageError``. Retrying is safe
because every write carries a request id that the commit script remembers
(:data:`~evstate.backends.redis.scripts.REQUEST_TTL_MS`): a write whose first attempt did
reach Redis is recognised and not applied twice. redis-py reconnects on the next call by
itself, so a store outlives any outage.

Values are stored as compact JSON text (UTF-8), as the iii engine's redis adapter does.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from evstate.backends.redis.lease_scripts import DELETE_TRIGGER, LEASE, LOCK, REGISTER, REPLAY
from evstate.backends.redis.read_scripts import (
    BISECT,
    LIVE_STATE,
    READ_KEY,
    READ_SCOPE,
    SCOPE_STATE,
    SCOPES,
)
from evstate.backends.redis.scripts import COMMIT, EXPIRE, INIT, PUT, TRIM
from evstate.backends.redis.update_script import UPDATE, UPDATE_FUNCTION, UPDATE_LIBRARY
from evstate.errors import BackendUnavailableError, CorruptionError, StorageError
from evstate.events import EVENT_TYPE_CODES, EXTRA_BATCH, EXTRA_REASON, EventRecord
from evstate.values import deadline_of, encode_value, strip_deadline, with_deadline

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "StreamEntry",
    "decode_name",
    "dump_value",
    "json_to_cbor",
    "load_value",
    "new_request_id",
    "pack_bulk",
    "pack_command",
    "parse_entry",
    "redact_url",
    "sleep_jitter",
    "text_with_deadline",
    "to_record",
]

T = TypeVar("T")
log = logging.getLogger("evstate")

_SCRIPTS = {
    "init": INIT,
    "commit": COMMIT,
    "put": PUT,
    "update": UPDATE,
    "lease": LEASE,
    "register": REGISTER,
    "replay": REPLAY,
    "delete_trigger": DELETE_TRIGGER,
    "trim": TRIM,
    "bisect": BISECT,
    "live_state": LIVE_STATE,
    "scope_state": SCOPE_STATE,
    "scopes": SCOPES,
    "read_key": READ_KEY,
    "read_scope": READ_SCOPE,
    "expire": EXPIRE,
    "lock": LOCK,
}
_FUNCTIONS = {"update": (UPDATE_LIBRARY, UPDATE_FUNCTION)}  # name -> (library, function)
_UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_TRANSIENT_REPLIES = ("READONLY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


class _Lane(threading.local):
    """A thread's own connection for :meth:`Backend.call_packed`, and whose it is."""

    conn: Any = None
    owner: tuple[int, int] = (0, 0)  # (process id, id of the client it was made for)


def redact_url(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def dump_value(value: Any) -> bytes:
    """Compact JSON text of a validated value (what iii's redis adapter stores)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def load_value(raw: bytes, where: str = "") -> Any:
    """Decode stored JSON text into a fresh object.

    Raises:
        CorruptionError: the text is not JSON (something else wrote the field).
    """
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise CorruptionError(f"{where or 'a stored value'} is not JSON text: {exc}") from None


def decode_name(raw: bytes) -> str:
    """A scope, key or trigger name as Redis returns it."""
    return raw.decode("utf-8", "surrogatepass")


class StreamEntry(NamedTuple):
    """One stream entry of ``evstate:log``: values as stored JSON text (``None``: absent).

    The redis store's own form of an event; :func:`to_record` turns it into the
    :class:`~evstate.events.EventRecord` every other part of evstate reads.
    """

    revision: int
    timestamp: int
    event_type: str  # "created", "updated", "deleted"
    scope: str
    key: str
    old: bytes | None
    new: bytes | None
    entry_id: bytes
    batch_start: int | None = None  # field ``batch``: inside an atomic batch that starts there
    expires: int | None = None  # field ``expires``: the new value's deadline (ms)
    reason: str | None = None  # field ``reason``: "expired" on an expiry's deleted entry


def parse_entry(entry_id: bytes, fields: Any) -> StreamEntry:
    """Parse a stream entry (redis-py's dict form or a script's flat list form).

    Raises:
        CorruptionError: the entry does not have the evstate shape.
    """
    if not isinstance(fields, dict):
        flat = list(fields)
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
    try:
        revision = int(entry_id.split(b"-", 1)[0])
        event_type = fields[b"type"].decode()
        if event_type not in ("created", "updated", "deleted"):
            raise ValueError(f"unknown event type {event_type!r}")
        return StreamEntry(
            revision,
            int(fields[b"ts"]),
            event_type,
            decode_name(fields[b"scope"]),
            decode_name(fields[b"key"]),
            fields.get(b"old"),
            fields.get(b"new"),
            entry_id,
            int(fields[b"batch"]) if b"batch" in fields else None,
            int(fields[b"expires"]) if b"expires" in fields else None,
            fields[b"reason"].decode() if b"reason" in fields else None,
        )
    except (KeyError, ValueError, AttributeError) as exc:
        raise CorruptionError(f"stream entry {entry_id!r} is malformed: {exc}") from None


def json_to_cbor(text: bytes | None, where: str = "") -> bytes | None:
    """A stored JSON text as the stored value evstate's records carry (None stays None).

    A text with a deadline (:func:`text_with_deadline`) keeps it.
    """
    if text is None:
        return None
    deadline = deadline_of(text)
    if deadline is None:
        return encode_value(load_value(text, where))
    return with_deadline(encode_value(load_value(strip_deadline(text), where)), deadline)


def text_with_deadline(text: bytes, deadline: int | None) -> bytes:
    """A JSON text as replay and snapshots keep it: with the key's deadline, if any.

    The same ``FF`` + u64 prefix as stored values (no JSON text starts with ``FF``).
    """
    return text if deadline is None else with_deadline(text, deadline)


def to_record(entry: StreamEntry) -> EventRecord:
    """The stream entry as an :class:`~evstate.events.EventRecord` (values CBOR-encoded)."""
    where = f"revision {entry.revision}"
    return EventRecord(
        entry.revision,
        entry.timestamp,
        EVENT_TYPE_CODES[entry.event_type],
        entry.scope,
        entry.key,
        json_to_cbor(entry.old, where),
        json_to_cbor(
            None if entry.new is None else text_with_deadline(entry.new, entry.expires), where
        ),
        _extra(entry),
    )


def _extra(entry: StreamEntry) -> dict[str, Any] | None:
    extra: dict[str, Any] = {}
    if entry.batch_start is not None:
        extra[EXTRA_BATCH] = entry.batch_start
    if entry.reason is not None:
        extra[EXTRA_REASON] = entry.reason
    return extra or None


class Backend:
    """One connection pool to Redis, with evstate's error mapping and retry policy.

    ``attempts`` quick attempts (50 ms, 100 ms, ... apart) are made before an outage is
    reported; connecting waits at most ``connect_timeout`` seconds per attempt, a reply at
    most ``socket_timeout`` seconds (``?socket_timeout=`` and ``?socket_connect_timeout=`` in
    the URL override them).
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 2.0,
        socket_timeout: float = 10.0,
        attempts: int = 3,
    ) -> None:
        self.url = url
        self.safe_url = redact_url(url)
        self.attempts = attempts
        try:
            # Typed Any: redis-py types replies as bytes | str unions; decode_responses is off.
            self.client: Any = redis.Redis.from_url(
                url,
                socket_connect_timeout=connect_timeout,
                socket_timeout=socket_timeout,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=30,
            )
        except ValueError as exc:
            raise StorageError(f"bad redis_url {self.safe_url}: {exc}") from None
        self._scripts = {name: self.client.register_script(src) for name, src in _SCRIPTS.items()}
        self._functions = True  # call_packed: FCALL until the server refuses functions
        self._lane = _Lane()  # call_packed: each thread's own connection
        self._lanes: weakref.WeakSet[Any] = weakref.WeakSet()  # all of them, to close
        self._lanes_lock = threading.Lock()
        self._closed = threading.Event()

    def new_client(self, *, socket_timeout: float) -> redis.Redis:
        """A separate client (own pool) for blocking reads, with the same URL."""
        return redis.Redis.from_url(
            self.url,
            socket_connect_timeout=2.0,
            socket_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def unavailable(self, what: str, exc: BaseException) -> BackendUnavailableError:
        """The error to raise when ``what`` failed because Redis is unreachable."""
        return BackendUnavailableError(
            f"Redis at {self.safe_url} is unavailable ({what}): {type(exc).__name__}: {exc}"
        )

    def run(self, what: str, fn: Callable[[Any], T]) -> T:
        """Call ``fn(client)``, retrying briefly while Redis is unreachable.

        Only pass idempotent calls (every evstate write is, through its request id).

        Raises:
            BackendUnavailableError: Redis stayed unreachable, loading or read-only.
            StorageError: Redis answered with another error.
        """
        last: BaseException | None = None
        for attempt in range(self.attempts):
            if attempt and self._closed.wait(0.05 * 2 ** (attempt - 1)):
                break
            try:
                return fn(self.client)
            except _UNAVAILABLE as exc:
                last = exc
            except redis.exceptions.ResponseError as exc:
                if str(exc).startswith(_TRANSIENT_REPLIES):
                    last = exc
                    continue
                raise StorageError(f"Redis at {self.safe_url} refused {what}: {exc}") from exc
            except redis.exceptions.RedisError as exc:
                raise StorageError(f"Redis at {self.safe_url} failed {what}: {exc}") from exc
        assert last is not None or self._closed.is_set()
        raise self.unavailable(what, last or ConnectionError("closed"))

    def script(self, name: str, keys: Sequence[Any], args: Sequence[Any], what: str = "") -> Any:
        """Run script ``name`` (EVALSHA, loading it again after a Redis restart)."""
        script = self._scripts[name]
        return self.run(what or name, lambda c: script(keys=keys, args=args, client=c))

    def script_many(
        self, name: str, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]], what: str = ""
    ) -> list[Any]:
        """Run script ``name`` once per ``(keys, args)`` in one pipeline (one round trip)."""
        script = self._scripts[name]

        def run(c: Any) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            for keys, args in calls:
                script(keys=keys, args=args, client=pipe)
            return list(pipe.execute())

        return self.run(what or name, run)

    def call_packed(self, name: str, nkeys: int, packed: bytes, count: int, what: str = "") -> Any:
        """Run ``name`` (``update``) on ``count`` arguments packed by :func:`pack_bulk`.

        The first ``nkeys`` of them are its keys. The same contract as :meth:`script`
        (retries, error mapping), on the hot path of ``update``, with three differences that
        more than halve its CPU cost:

        * it calls the code as a Redis *function* (``FCALL``; the library is loaded with
          ``FUNCTION LOAD`` on first use and again after a ``Function not found``), whose
          definitions are made once per load instead of once per call. A server that
          refuses functions (an ACL, no such command) gets the ``EVALSHA`` script instead,
          the same Lua source;
        * the command is packed by the caller and sent without redis-py's generic command
          machinery (argument encoding, hooks);
        * on the calling thread's own connection (:meth:`_send`).
        """
        return self.run(what or name, lambda c: self._call_packed(c, name, nkeys, packed, count))

    def _call_packed(self, client: Any, name: str, nkeys: int, packed: bytes, count: int) -> Any:
        library, function = _FUNCTIONS[name]
        for _ in range(3):
            functions = self._functions
            verb = [b"FCALL", function.encode()] if functions else [b"EVALSHA", self.sha(name)]
            command = pack_command([*verb, b"%d" % nkeys], packed, count)
            try:
                return self._send(client, command)
            except redis.exceptions.NoScriptError:
                client.script_load(self._scripts[name].script)  # a restarted or flushed Redis
            except redis.exceptions.ResponseError as exc:
                message = str(exc)
                if functions and "Function not found" in message:
                    self._load_library(client, library)  # first use, or a flushed server
                elif functions and ("unknown command" in message or "'fcall'" in message):
                    self._functions = False  # no functions here, or an ACL forbids FCALL
                else:
                    raise
        raise StorageError(f"Redis at {self.safe_url} keeps losing script {name!r}")

    def sha(self, name: str) -> bytes:
        """The SHA1 of script ``name`` (for ``EVALSHA``)."""
        return str(self._scripts[name].sha).encode()

    def _load_library(self, client: Any, library: str) -> None:
        """``FUNCTION LOAD REPLACE``; a server that refuses it gets the script from now on."""
        try:
            client.function_load(library, replace=True)
        except redis.exceptions.ResponseError as exc:
            if str(exc).startswith(_TRANSIENT_REPLIES):
                raise
            log.info("evstate: Redis refused FUNCTION LOAD (%s); using EVALSHA", exc)
            self._functions = False

    def _send(self, client: Any, packed: bytes) -> Any:
        """Send one packed command on this thread's own connection; return the reply.

        Each thread keeps one connection for :meth:`call_packed` (made like the pool's, and
        closed with the pool), which spares the pool's bookkeeping on every call: a lock
        and connection-state hooks cost as much as packing the command. A connection that
        failed mid-call is closed and replaced by the next call; a forked child makes its own.
        """
        lane = self._lane
        conn = lane.conn
        if conn is None or lane.owner != (os.getpid(), id(client)):
            conn = self._new_lane(client)
        try:
            conn.send_packed_command([packed])
            return conn.read_response()
        except redis.exceptions.ResponseError:
            raise  # a whole error reply was read: the connection stays usable
        except BaseException:
            lane.conn = None
            conn.disconnect()  # the reply may be half read: never reuse this connection
            raise

    def _new_lane(self, client: Any) -> Any:
        pool = client.connection_pool
        conn = pool.connection_class(**dict(pool.connection_kwargs))  # as the pool makes one
        self._lane.conn, self._lane.owner = conn, (os.getpid(), id(client))
        with self._lanes_lock:
            self._lanes.add(conn)
        return conn

    def close(self) -> None:
        """Stop retrying and close every pooled connection (and every thread's own)."""
        self._closed.set()
        self.client.close()
        with self._lanes_lock:
            lanes = list(self._lanes)
        for conn in lanes:
            conn.disconnect()


def new_request_id() -> str:
    """A unique id for one write (retries of that write reuse it): 128 random bits, in hex."""
    return os.urandom(16).hex()


def pack_bulk(parts: Sequence[bytes]) -> bytes:
    """``parts`` as RESP bulk strings (command arguments), concatenated."""
    return b"".join([b"$%d\r\n%s\r\n" % (len(part), part) for part in parts])


def pack_command(parts: Sequence[bytes], tail: bytes = b"", tail_count: int = 0) -> bytes:
    """``parts`` as one RESP command (an array of bulk strings), ready to send.

    ``tail``: ``tail_count`` more arguments, already packed by :func:`pack_bulk`.
    """
    return b"*%d\r\n" % (len(parts) + tail_count) + pack_bulk(parts) + tail


def sleep_jitter(attempt: int) -> None:
    """Back off after a compare-and-set conflict (attempt 1, 2, ...): up to ~5 ms."""
    time.sleep(min(0.005, 0.0002 * attempt) * (0.5 + (uuid.uuid4().int % 1000) / 1000))
