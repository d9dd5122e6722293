"""State triggers as durable projections of the log.

Each trigger is a named projection: a thread that reads events from its own cursor, in
revision order, one at a time, and hands the matching ones to its handler. The cursor
survives restarts (docs/triggers.md):

- after a handler returns, the cursor advances in memory; a checkpointer makes cursors
  durable every ``CHECKPOINT_INTERVAL`` (after fsyncing the log), so after a crash a
  trigger resumes after its last checkpoint: external effects are at-least-once, and the
  event's ``revision`` is the idempotency key;
- writes a handler makes through ``event.store`` are committed in ONE log record together
  with the cursor advance, so effects inside the store happen exactly once;
- a handler that raises is retried with exponential backoff, then the event is parked (a
  dead letter you can list, replay or drop) and the trigger moves on.

Writers never wait for handlers; a slow trigger delays only itself.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import cbor2

from evstate.backends.file.diskio import DiskIO
from evstate.errors import (
    CorruptionError,
    HistoryCompactedError,
    InvalidRequestError,
    StorageError,
    StoreFailedError,
    TriggerTimeoutError,
)
from evstate.events import EVENT_TYPE_NAMES, EventRecord, event_dict, iii_event_dict
from evstate.ops import apply_update_ops, parse_ops
from evstate.backends.file.segment import frame_record, unframe_single
from evstate.values import decode_value, encode_value, validate_value

__all__ = [
    "TRIGGERS_FILE",
    "Trigger",
    "TriggerContext",
    "TriggerEvent",
    "TriggerManager",
    "call_handler",
    "check_trigger_args",
    "register_or_decorate",
]

log = logging.getLogger("evstate")

TRIGGERS_FILE = "triggers.cbor"  # docs/format.md §7
CHECKPOINT_INTERVAL = 0.1
STORAGE_RETRY = 0.25  # seconds before a trigger retries an event whose batch write failed
BATCH = 1024

Handler = Callable[[Any], Any]


def check_trigger_args(
    name: object, handler: object, *, scope: object, key: object, condition: object
) -> None:
    """Validate ``trigger()``'s arguments (shared by every kind of store and the follower).

    Raises:
        InvalidRequestError: an empty or non-str name, a non-callable handler or condition,
            or a scope/key that is neither a str nor None.
    """
    if type(name) is not str or not name:
        raise InvalidRequestError("a trigger name must be a non-empty str")
    if not callable(handler) or (condition is not None and not callable(condition)):
        raise InvalidRequestError("handler and condition must be callable")
    for what, value in (("scope", scope), ("key", key)):
        if value is not None and type(value) is not str:
            raise InvalidRequestError(f"{what} must be a str or None")


def register_or_decorate(register: Callable[[Handler], Any], handler: Handler | None) -> Any:
    """``trigger(name, handler)`` registers now; ``@trigger(name)`` registers the function.

    Returns what ``register`` returns, or (as a decorator) the decorated function unchanged.
    """
    if handler is not None:
        return register(handler)

    def decorator(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        register(fn)
        return fn

    return decorator


class TriggerHost(Protocol):
    """What the trigger machinery needs from a store."""

    def _visible_revision(self) -> int: ...
    def _iter_records(self, low: int, high: int) -> Iterator[EventRecord]: ...
    def _oldest_revision(self) -> int: ...
    def _commit_batch(self, writes: list[tuple[Any, ...]], cursor: tuple[str, int]) -> None: ...
    def _flush_log(self) -> None: ...
    def _raw_value(self, scope: str, key: str) -> bytes | None: ...
    def list(self, scope: str) -> dict[str, Any]: ...


_DELETED = b""  # overlay marker: no CBOR value encodes to zero bytes
_UNSET: Any = object()


class TriggerContext:
    """``event.store`` inside a handler: writes here commit with the cursor advance.

    ``set``/``update``/``delete`` are recorded and applied, all together and atomically with
    the trigger's cursor advance, when the handler returns (so they happen exactly once,
    even across crashes and retries). What they return is computed against the state at the
    moment of the call plus this handler's earlier writes; at commit, ``update`` ops are
    applied again to the state current then (so increments are never lost). ``get`` sees
    this handler's writes; ``list`` reads the committed state.
    """

    def __init__(self, host: TriggerHost) -> None:
        self._host = host
        self.writes: list[tuple[Any, ...]] = []
        self._overlay: dict[tuple[str, str], bytes] = {}

    def _raw(self, scope: str, key: str) -> bytes | None:
        raw = self._overlay.get((scope, key))
        if raw is None:
            return self._host._raw_value(scope, key)
        return None if raw is _DELETED else raw

    def get(self, scope: str, key: str) -> Any:
        """The value, including this handler's uncommitted writes; ``None`` if missing."""
        _check_names(scope, key)
        raw = self._raw(scope, key)
        return None if raw is None else decode_value(raw)

    def list(self, scope: str) -> dict[str, Any]:
        """The committed ``{key: value}`` of ``scope`` (without this handler's writes)."""
        return self._host.list(scope)

    def set(self, scope: str, key: str, value: Any) -> dict[str, Any]:
        """Record a ``set``; returns ``{"old_value", "new_value"}``."""
        _check_names(scope, key)
        validate_value(value)
        old = self._raw(scope, key)
        new = encode_value(value)
        self.writes.append(("set", scope, key, new))
        self._overlay[(scope, key)] = new
        return {"old_value": _decoded(old), "new_value": decode_value(new)}

    def update(self, scope: str, key: str, ops: Any) -> dict[str, Any]:
        """Record an ``update`` (iii op rules); returns ``{"old_value", "new_value"}`` (+errors)."""
        _check_names(scope, key)
        parsed = parse_ops(ops)
        old = self._raw(scope, key)
        current = {} if old is None else decode_value(old)
        new_value, errors = apply_update_ops(current, parsed, missing=old is None)
        new = encode_value(new_value)
        self.writes.append(("update", scope, key, parsed))
        self._overlay[(scope, key)] = new
        result: dict[str, Any] = {"old_value": _decoded(old), "new_value": decode_value(new)}
        if errors:
            result["errors"] = errors
        return result

    def delete(self, scope: str, key: str) -> Any:
        """Record a ``delete``; returns the value it deletes (as of now), or ``None``."""
        _check_names(scope, key)
        old = self._raw(scope, key)
        self.writes.append(("delete", scope, key, None))
        self._overlay[(scope, key)] = _DELETED
        return _decoded(old)


def _decoded(raw: bytes | None) -> Any:
    return None if raw is None else decode_value(raw)


def _check_names(scope: object, key: object) -> None:
    if type(scope) is not str or type(key) is not str:
        raise InvalidRequestError("scope and key must be str")


class TriggerEvent:
    """The event a handler receives.

    The doc's fields as attributes (``message_type``, ``event_type``, ``scope``, ``key``,
    ``old_value``, ``new_value``), plus ``revision``, ``timestamp``, ``trigger`` (its name)
    and ``store`` (a :class:`TriggerContext`).
    """

    __slots__ = (
        "_context",
        "_host",
        "_new",
        "_old",
        "_record",
        "event_type",
        "key",
        "revision",
        "scope",
        "timestamp",
        "trigger",
    )
    message_type = "state"

    def __init__(
        self,
        record: EventRecord,
        trigger: str,
        store: Any = None,
        *,
        host: TriggerHost | None = None,
    ) -> None:
        """``store`` is the handler's write context; or give ``host`` to make one on first use."""
        self._record = record
        self.revision = record.revision
        self.timestamp = record.timestamp
        self.event_type = EVENT_TYPE_NAMES[record.type_code]
        self.scope = record.scope
        self.key = record.key
        self.trigger = trigger
        self._host = host
        self._context: Any = store
        self._old: Any = _UNSET
        self._new: Any = _UNSET

    # Values are decoded on first access (a handler that only looks at keys never pays for
    # them), then kept, so a handler sees its own changes to them.
    @property
    def store(self) -> Any:
        """The handler's write context (a :class:`TriggerContext` in a store)."""
        if self._context is None and self._host is not None:
            self._context = TriggerContext(self._host)
        return self._context

    @property
    def old_value(self) -> Any:
        """The value before the write (``None`` for created, and for a delete of nothing)."""
        if self._old is _UNSET:
            raw = self._record.old
            self._old = None if raw is None else decode_value(raw)
        return self._old

    @property
    def new_value(self) -> Any:
        """The value after the write (``None`` for deleted)."""
        if self._new is _UNSET:
            raw = self._record.new
            self._new = None if raw is None else decode_value(raw)
        return self._new

    def to_dict(self) -> dict[str, Any]:
        """The doc's event shape plus ``revision`` and ``timestamp``."""
        return event_dict(self)

    def to_iii(self) -> dict[str, Any]:
        """The iii engine's wire event (``{"type": "state", "event_type": "state:..."}``)."""
        return iii_event_dict(self)

    def __repr__(self) -> str:
        return (
            f"<TriggerEvent {self.event_type} {self.scope}/{self.key} "
            f"revision={self.revision} trigger={self.trigger!r}>"
        )


@dataclass(eq=False)
class _TriggerState:
    """A known trigger: its cursor and dead letters, and while registered its runner."""

    name: str
    cursor: int
    parked: list[dict[str, Any]] = field(default_factory=list)
    handler: Handler | None = None
    condition: Handler | None = None
    scope: str | None = None
    key: str | None = None
    last_error: str | None = None
    delivered: int = 0
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    exiting: threading.Thread | None = None  # a runner told to stop that may still run
    # Guards cursor advances against a concurrent unregister: once ``stop`` is set under it,
    # the old runner can no longer move the cursor a new runner starts from.
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def registered(self) -> bool:
        return self.thread is not None


class Trigger:
    """A registered trigger (what :meth:`Store.trigger` returns)."""

    def __init__(self, manager: TriggerManager, name: str) -> None:
        self._manager = manager
        self.name = name

    def unregister(self) -> None:
        """Stop delivery; the cursor is kept, so registering the name again resumes."""
        self._manager.unregister(self.name)

    def __repr__(self) -> str:
        return f"<evstate.Trigger {self.name!r}>"


def encode_cursor_file(body: dict[str, Any]) -> bytes:
    """``triggers.cbor``'s bytes: the CBOR body framed with its length and CRC-32 (§7)."""
    return frame_record(cbor2.dumps(body))


def _parse_resets(data: bytes) -> dict[str, int]:
    """The ``resets`` map of ``triggers.cbor`` (absent in older files)."""
    resets = cbor2.loads(unframe_single(data)).get("resets", {})
    if not isinstance(resets, dict) or not all(
        type(k) is str and type(v) is int for k, v in resets.items()
    ):
        raise ValueError("badly shaped resets in the trigger cursor file")
    return resets


def _parse_cursor_file(data: bytes) -> dict[str, tuple[int, list[dict[str, Any]]]]:
    """Decode ``triggers.cbor`` (docs/format.md §7) into ``name -> (cursor, parked)``.

    Raises:
        ValueError: (or a CBOR decode error) the file does not have that shape throughout.
    """
    body = cbor2.loads(unframe_single(data))
    triggers = body.get("triggers") if isinstance(body, dict) else None
    if not isinstance(body, dict) or body.get("version") != 1 or not isinstance(triggers, dict):
        raise ValueError("not a version 1 trigger cursor file")
    result: dict[str, tuple[int, list[dict[str, Any]]]] = {}
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
        result[name] = (cursor, parked)
    return result


def call_handler(
    fn: Handler, event: TriggerEvent, loops: dict[str, asyncio.AbstractEventLoop]
) -> Any:
    """Call a sync or async function; async ones run on this thread's own event loop."""
    result = fn(event)
    if result is not None and inspect.isawaitable(result):
        loop = loops.get("loop")
        if loop is None:
            loop = loops["loop"] = asyncio.new_event_loop()
        return loop.run_until_complete(result)
    return result


class TriggerManager:
    """Registry, runners, checkpoints and dead letters of a store's triggers."""

    def __init__(
        self,
        host: TriggerHost,
        *,
        directory: str | None,
        io: DiskIO | None,
        recovered: dict[str, tuple[int, int]],
        enabled: bool,
        max_attempts: int = 5,
        backoff: float = 0.05,
    ) -> None:
        self._host = host
        self._directory = directory
        self._io = io or DiskIO()
        self._states: dict[str, _TriggerState] = {}
        self._lock = threading.RLock()
        self._progress = threading.Condition(self._lock)
        self.feed = threading.Condition()  # notified by the store when events become visible
        self._enabled = enabled
        self._dirty = False
        self._closed = False
        self._closing = threading.Event()
        self._active = False
        self._waiting = 0  # runners blocked on ``feed``
        # name -> head revision when its cursor was last set by hand (replay or delete)
        self._resets: dict[str, int] = {}
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._load(recovered)
        self._checkpointer: threading.Thread | None = None
        if directory is not None:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="evstate-trigger-checkpoints", daemon=True
            )
            self._checkpointer.start()

    # ---- persistence (docs/format.md §7) ----------------------------------------------

    def _path(self) -> str | None:
        return None if self._directory is None else os.path.join(self._directory, TRIGGERS_FILE)

    def _load(self, recovered: dict[str, tuple[int, int]]) -> None:
        """Merge the cursor file with cursors found in the snapshot and the log.

        ``recovered`` maps a name to ``(cursor, revision of the record or snapshot that
        holds it)``; the highest cursor wins, except over an explicit ``replay_trigger`` or
        ``delete_trigger`` (recorded in ``resets``) made after that revision.
        """
        path = self._path()
        saved: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        if path is not None and os.path.exists(path):
            try:
                data = self._io.read_file(path)
                saved = _parse_cursor_file(data)
                self._resets = _parse_resets(data)
            except Exception as exc:  # a bad file must not lose the log's cursors
                log.error("evstate: ignoring unreadable %s: %s", path, exc)
        for name, (cursor, parked) in saved.items():
            self._states[name] = _TriggerState(name, cursor, parked)
        for name, (cursor, source) in recovered.items():
            if source <= self._resets.get(name, -1):
                continue  # superseded by a later replay_trigger / delete_trigger
            state = self._states.setdefault(name, _TriggerState(name, cursor))
            state.cursor = max(state.cursor, cursor)

    def checkpoint(self) -> None:
        """Make every cursor and dead letter durable now (log first, then the cursor file)."""
        path = self._path()
        with self._lock:
            if path is None or not self._dirty:
                return
            self._dirty = False
            body = {
                "version": 1,
                "resets": dict(self._resets),
                "triggers": {
                    s.name: {"cursor": s.cursor, "parked": s.parked} for s in self._states.values()
                },
            }
        try:
            # Cursors may cover events whose handler writes sit in not-yet-fsynced batches.
            self._host._flush_log()
            self._io.failpoint("cursor_save")
            tmp = path + ".tmp"
            if os.path.exists(tmp):
                self._io.remove(tmp)
            fd = self._io.create_exclusive(tmp)
            try:
                self._io.write_all(fd, encode_cursor_file(body))
                self._io.fsync(fd)
            finally:
                self._io.close(fd)
            self._io.rename(tmp, path)
            assert self._directory is not None
            self._io.fsync_dir(self._directory)
        except Exception as exc:
            with self._lock:
                self._dirty = True
            log.error("evstate: could not checkpoint trigger cursors: %s", exc)

    def _checkpoint_loop(self) -> None:
        while not self._closing.wait(CHECKPOINT_INTERVAL):
            self.checkpoint()

    def committed_cursors(self) -> dict[str, int]:
        """Every known trigger's cursor (stored in snapshots)."""
        with self._lock:
            return {s.name: s.cursor for s in self._states.values()}

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
        """Register (or re-register) ``name``; see ``Store.trigger`` for the contract."""
        check_trigger_args(name, handler, scope=scope, key=key, condition=condition)
        oldest = self._host._oldest_revision()
        with self._lock:
            state = self._states.get(name)
            if state is not None and state.registered:
                raise InvalidRequestError(f"trigger {name!r} is already registered")
            if state is None:
                state = _TriggerState(name, self._start_cursor(start, oldest))
                self._states[name] = state
                self._dirty = True
            elif state.cursor < oldest - 1:
                raise HistoryCompactedError(
                    f"trigger {name!r} stopped at revision {state.cursor}, but history before "
                    f"revision {oldest} was compacted: replay_trigger() from a retained "
                    f"revision, or delete_trigger() and register it again",
                    horizon=oldest,
                )
            previous, state.exiting = state.exiting, None
        if previous is not None and previous is not threading.current_thread():
            previous.join()  # never two runners for one name (exactly-once needs that)
        with self._lock:
            if state.registered:
                raise InvalidRequestError(f"trigger {name!r} is already registered")
            state.handler, state.condition = handler, condition
            state.scope, state.key = scope, key
            state.stop = threading.Event()
            state.thread = threading.Thread(
                target=self._run,
                args=(state, state.stop),
                name=f"evstate-trigger-{name}",
                daemon=True,
            )
            state.thread.start()
            self._update_active()
        return Trigger(self, name)

    def _start_cursor(self, start: str | int, oldest: int) -> int:
        if start == "latest":
            return self._host._visible_revision()
        if start == "earliest":
            return oldest - 1
        if type(start) is int and start >= 1:
            if start < oldest:
                raise HistoryCompactedError(
                    f"revision {start} is before the retention horizon (revision {oldest})",
                    horizon=oldest,
                )
            return start - 1
        raise InvalidRequestError(
            f"start must be 'latest', 'earliest' or a revision >= 1, got {start!r}"
        )

    def unregister(self, name: str, *, wait: bool = True) -> None:
        """Stop ``name``'s runner; keep its cursor and dead letters.

        With ``wait=False`` it returns at once (safe to call from an event loop whose
        handler calls the runner may be waiting on); the runner stops on its own and never
        advances the cursor past an event it did not finish.
        """
        with self._lock:
            state = self._states.get(name)
            if state is None or state.thread is None:
                return
            thread, state.thread = state.thread, None
            with state.lock:
                state.stop.set()
            state.exiting = None if wait else thread
        with self.feed:
            self.feed.notify_all()
        if wait and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            self._dirty = True
            self._update_active()
            self._progress.notify_all()

    def delete(self, name: str) -> None:
        """Unregister ``name`` and forget its cursor and dead letters (durably, now)."""
        self.unregister(name)
        with self._lock:
            if self._states.pop(name, None) is not None:
                self._resets[name] = self._host._visible_revision()
                self._dirty = True
        self.checkpoint()

    def replay(self, name: str, from_revision: int) -> None:
        """Move ``name``'s cursor so delivery continues at ``from_revision``."""
        oldest = self._host._oldest_revision()
        if type(from_revision) is not int or from_revision < 1:
            raise InvalidRequestError("from_revision must be an int >= 1")
        if from_revision < oldest:
            raise HistoryCompactedError(
                f"revision {from_revision} is before the retention horizon (revision {oldest})",
                horizon=oldest,
            )
        with self._lock:
            state = self._require(name)
            registered = state.registered
        if registered:
            handler, condition, scope, key = state.handler, state.condition, state.scope, state.key
            self.unregister(name)
        with self._lock:
            head = self._host._visible_revision()
            state.cursor = min(from_revision - 1, head)
            self._resets[name] = head
            self._dirty = True
        self.checkpoint()
        if registered:
            assert handler is not None
            self.register(name, handler, scope=scope, key=key, condition=condition, start=0)

    def _require(self, name: str) -> _TriggerState:
        state = self._states.get(name)
        if state is None:
            raise InvalidRequestError(f"no trigger named {name!r}")
        return state

    # ---- delivery -----------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether delivery runs (``triggers_enabled``)."""
        return self._enabled

    def set_enabled(self, enabled: bool) -> None:
        """Pause or resume every trigger; resuming continues from the cursors."""
        self._enabled = bool(enabled)
        with self.feed:
            self.feed.notify_all()

    def notify(self) -> None:
        """Wake runners waiting for new events (cheap when none waits: called per write)."""
        if self._waiting:
            with self.feed:
                self.feed.notify_all()

    def _run(self, state: _TriggerState, stop: threading.Event) -> None:
        # ``stop`` is this runner's own event: a later registration gets a new one.
        loops: dict[str, asyncio.AbstractEventLoop] = {}
        try:
            while not stop.is_set() and not self._closed:
                head = self._host._visible_revision()
                if not self._enabled or state.cursor >= head:
                    with self.feed:
                        # Count ourselves as waiting *before* the re-check, so a writer that
                        # makes an event visible after it either sees us and notifies, or
                        # made it visible before the re-check.
                        self._waiting += 1
                        try:
                            if not stop.is_set() and (
                                not self._enabled or state.cursor >= self._host._visible_revision()
                            ):
                                self.feed.wait(0.5)
                        finally:
                            self._waiting -= 1
                    continue
                try:
                    records = self._host._iter_records(state.cursor + 1, head)
                    for record in records:
                        if stop.is_set() or not self._enabled:
                            break
                        if not self._deliver(state, record, loops, stop):
                            break  # stopping: this event stays undelivered
                        with state.lock:
                            if stop.is_set():
                                break
                            state.cursor = record.revision
                        self._dirty = True
                        if record.revision % 256 == 0:
                            with self._lock:
                                self._progress.notify_all()
                    with self._lock:
                        self._progress.notify_all()
                except HistoryCompactedError as exc:
                    state.last_error = str(exc)
                    log.error("evstate: trigger %r is behind the horizon: %s", state.name, exc)
                    stop.wait(1.0)
                except CorruptionError as exc:  # a damaged segment: report, never skip
                    state.last_error = f"corruption: {exc}"
                    log.error("evstate: trigger %r cannot read the log: %s", state.name, exc)
                    stop.wait(1.0)
                except StoreFailedError as exc:
                    state.last_error = f"store failed: {exc}"
                    log.error("evstate: trigger %r stopped: %s", state.name, exc)
                    return
                except StorageError as exc:  # a failed write (a full disk): try it again
                    state.last_error = f"storage error: {exc}"
                    log.error("evstate: trigger %r will retry: %s", state.name, exc)
                    stop.wait(STORAGE_RETRY)
        finally:
            loop = loops.get("loop")
            if loop is not None:
                loop.close()

    def _deliver(
        self,
        state: _TriggerState,
        record: EventRecord,
        loops: dict[str, asyncio.AbstractEventLoop],
        stop: threading.Event,
    ) -> bool:
        """Run one event through condition and handler; False if stopped before finishing."""
        if (state.scope is not None and record.scope != state.scope) or (
            state.key is not None and record.key != state.key
        ):
            return True
        attempt = 0
        while True:
            event = TriggerEvent(record, state.name, host=self._host)
            try:
                if state.condition is None or call_handler(state.condition, event, loops):
                    assert state.handler is not None
                    call_handler(state.handler, event, loops)
                    if stop.is_set():
                        return False  # unregistered meanwhile: commit nothing, redeliver later
                    context = event._context
                    if context is not None and context.writes:
                        self._host._commit_batch(context.writes, (state.name, record.revision))
                    state.delivered += 1
                return True
            except StorageError:
                raise
            except Exception as exc:
                if stop.is_set():
                    return (
                        False  # unregistered mid-call (e.g. the worker went away): redeliver later
                    )
                attempt += 1
                state.last_error = f"{type(exc).__name__}: {exc}"
                if attempt >= self.max_attempts:
                    self._park(state, event, state.last_error, attempt)
                    return True
                log.warning(
                    "evstate: trigger %r failed on revision %d (attempt %d): %s",
                    state.name,
                    record.revision,
                    attempt,
                    state.last_error,
                )
                if stop.wait(self.backoff * 2 ** (attempt - 1)):
                    return False

    def _park(self, state: _TriggerState, event: TriggerEvent, error: str, attempts: int) -> None:
        log.error(
            "evstate: trigger %r parked revision %d after %d attempts: %s",
            state.name,
            event.revision,
            attempts,
            error,
        )
        with self._lock:
            state.parked.append(
                {
                    "revision": event.revision,
                    "event": event.to_dict(),
                    "error": error,
                    "attempts": attempts,
                    "parked_at": time.time_ns() // 1_000_000,
                }
            )
            self._dirty = True

    # ---- dead letters -------------------------------------------------------------------

    def parked(self, name: str) -> list[dict[str, Any]]:
        """The parked events of ``name`` (``revision``, ``event``, ``error``, ``attempts``)."""
        with self._lock:
            return [dict(p) for p in self._require(name).parked]

    def drop_parked(self, name: str, revision: int | None = None) -> int:
        """Forget parked events (all, or one revision); returns how many."""
        with self._lock:
            state = self._require(name)
            before = len(state.parked)
            state.parked = [
                p for p in state.parked if revision is not None and p["revision"] != revision
            ]
            self._dirty = True
            return before - len(state.parked)

    def replay_parked(self, name: str, revision: int | None = None) -> int:
        """Run the handler again on parked events, now, in this thread.

        Events that succeed leave the list (their writes through ``event.store`` commit as
        usual); those that fail again stay parked with the new error. Returns the number
        that succeeded. The trigger must be registered (its handler is needed).
        """
        with self._lock:
            state = self._require(name)
            if state.handler is None:
                raise InvalidRequestError(f"trigger {name!r} is not registered")
            todo = [p for p in state.parked if revision is None or p["revision"] == revision]
        done = 0
        loops: dict[str, asyncio.AbstractEventLoop] = {}
        try:
            for item in todo:
                records = list(self._host._iter_records(item["revision"], item["revision"]))
                if not records:
                    continue
                event = TriggerEvent(records[0], name, host=self._host)
                try:
                    assert state.handler is not None
                    call_handler(state.handler, event, loops)
                    context = event._context
                    if context is not None and context.writes:
                        self._host._commit_batch(context.writes, (name, state.cursor))
                except Exception as exc:
                    item["error"] = f"{type(exc).__name__}: {exc}"
                    item["attempts"] += 1
                    continue
                with self._lock:
                    state.parked = [p for p in state.parked if p is not item]
                    self._dirty = True
                done += 1
        finally:
            if "loop" in loops:
                loops["loop"].close()
        return done

    # ---- waiting and status -------------------------------------------------------------

    def wait(self, revision: int, timeout: float | None) -> None:
        """Block until every registered trigger's cursor reaches ``revision``.

        Raises:
            TriggerTimeoutError: ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                behind = [
                    s.name for s in self._states.values() if s.registered and s.cursor < revision
                ]
                if not behind:
                    return
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TriggerTimeoutError(
                        f"triggers {', '.join(sorted(behind))} did not reach revision "
                        f"{revision} within {timeout} s"
                    )
                self._progress.wait(0.1 if remaining is None else min(remaining, 0.1))

    def status(self, head: int) -> dict[str, dict[str, Any]]:
        """Per known trigger: cursor, lag in events, parked count, last error, filters."""
        with self._lock:
            return {
                s.name: {
                    "registered": s.registered,
                    "cursor": s.cursor,
                    "lag": max(head - s.cursor, 0),
                    "parked": len(s.parked),
                    "last_error": s.last_error,
                    "delivered": s.delivered,
                    "scope": s.scope,
                    "key": s.key,
                    "enabled": self._enabled,
                }
                for s in self._states.values()
            }

    def min_registered_cursor(self) -> int | None:
        """The lowest cursor of a registered trigger (retention keeps what it still needs)."""
        with self._lock:
            cursors = [s.cursor for s in self._states.values() if s.registered]
        return min(cursors) if cursors else None

    @property
    def active(self) -> bool:
        """True when at least one trigger is registered (cheap: checked on every write)."""
        return self._active

    def _update_active(self) -> None:
        self._active = any(s.registered for s in self._states.values())

    def close(self) -> None:
        """Stop every runner and write a final checkpoint."""
        for name in list(self._states):
            self.unregister(name)
        self._closed = True
        self._closing.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        with self._lock:
            self._dirty = True
        self.checkpoint()
