"""What a trigger handler receives: the event, and ``event.store`` to write through.

:class:`TriggerEvent` decodes values on first access (a handler that looks only at keys
never pays for them). :class:`TriggerContext` records writes, which commit together with
the trigger's cursor advance (exactly once); :class:`ReadOnlyContext` is ``event.store``
where the store is not this process's to write (a follower).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

from evstate.core.arguments import check_name
from evstate.core.writes import Write
from evstate.errors import InvalidRequestError
from evstate.events import EVENT_TYPE_NAMES, EventRecord, event_dict, iii_event_dict
from evstate.ops import parse_ops
from evstate.ops_apply import apply_update_ops
from evstate.values import decode_value, encode_value

__all__ = [
    "ContextHost",
    "Handler",
    "ReadOnlyContext",
    "TriggerContext",
    "TriggerEvent",
    "call_handler",
]

Handler = Callable[[Any], Any]
_DELETED = b""  # overlay marker: no CBOR value encodes to zero bytes
_UNSET: Any = object()


class ContextHost(Protocol):
    """What ``event.store`` reads from the store."""

    def _raw_value(self, scope: str, key: str) -> bytes | None: ...
    def _encode_checked(self, value: Any) -> bytes: ...
    def list(self, scope: str) -> dict[str, Any]: ...  # noqa: D102


def _decoded(raw: bytes | None) -> Any:
    return None if raw is None else decode_value(raw)


class TriggerContext:
    """``event.store`` inside a handler: writes here commit with the cursor advance.

    ``set``/``update``/``delete`` are recorded and applied, all together and atomically with
    the trigger's cursor advance, when the handler returns (so they happen exactly once,
    even across crashes and retries). They obey every rule a direct write obeys (value
    checks, ``max_value_bytes``). What they return is computed against the state at the
    moment of the call plus this handler's earlier writes; at commit, ``update`` ops are
    applied again to the state current then (so increments are never lost). ``get`` sees
    this handler's writes; ``list`` reads the committed state.
    """

    def __init__(self, host: ContextHost) -> None:
        self._host = host
        self.writes: list[Write] = []
        self._overlay: dict[tuple[str, str], bytes] = {}

    def _raw(self, scope: str, key: str) -> bytes | None:
        raw = self._overlay.get((scope, key))
        if raw is None:
            return self._host._raw_value(scope, key)
        return None if raw is _DELETED else raw

    def get(self, scope: str, key: str) -> Any:
        """The value, including this handler's uncommitted writes; ``None`` if missing."""
        check_name("scope", scope)
        check_name("key", key)
        return _decoded(self._raw(scope, key))

    def list(self, scope: str) -> dict[str, Any]:
        """The committed ``{key: value}`` of ``scope`` (without this handler's writes)."""
        return self._host.list(scope)

    def set(self, scope: str, key: str, value: Any) -> dict[str, Any]:
        """Record a ``set``; returns ``{"old_value", "new_value"}``."""
        check_name("scope", scope)
        check_name("key", key)
        new = self._host._encode_checked(value)
        old = self._raw(scope, key)
        self.writes.append(Write("set", scope, key, new))
        self._overlay[(scope, key)] = new
        return {"old_value": _decoded(old), "new_value": decode_value(new)}

    def update(self, scope: str, key: str, ops: Any) -> dict[str, Any]:
        """Record an ``update`` (iii op rules); returns ``{"old_value", "new_value"}`` (+errors)."""
        check_name("scope", scope)
        check_name("key", key)
        parsed = parse_ops(ops)
        old = self._raw(scope, key)
        current = {} if old is None else decode_value(old)
        new_value, errors = apply_update_ops(current, parsed, missing=old is None)
        new = encode_value(new_value)
        self.writes.append(Write("update", scope, key, parsed))
        self._overlay[(scope, key)] = new
        result: dict[str, Any] = {"old_value": _decoded(old), "new_value": decode_value(new)}
        if errors:
            result["errors"] = errors
        return result

    def delete(self, scope: str, key: str) -> Any:
        """Record a ``delete``; returns the value it deletes (as of now), or ``None``."""
        check_name("scope", scope)
        check_name("key", key)
        old = self._raw(scope, key)
        self.writes.append(Write("delete", scope, key, None))
        self._overlay[(scope, key)] = _DELETED
        return _decoded(old)


class ReadOnlyContext(TriggerContext):
    """``event.store`` where this process may not write the store: reads only.

    ``get`` and ``list`` read the current state; ``set``, ``update`` and ``delete`` raise
    :class:`~evstate.errors.InvalidRequestError` (a follower's handler writes to targets of
    its own, keyed by ``event.revision``).
    """

    def _refuse(self, what: str) -> NoReturn:
        raise InvalidRequestError(
            f"a follower is read-only: {what} through event.store is not possible here; "
            "write to the owner (its API or server), or to the projection's own target"
        )

    def set(self, scope: str, key: str, value: Any) -> dict[str, Any]:
        """Refused: raises :class:`InvalidRequestError`."""
        self._refuse("set")

    def update(self, scope: str, key: str, ops: Any) -> dict[str, Any]:
        """Refused: raises :class:`InvalidRequestError`."""
        self._refuse("update")

    def delete(self, scope: str, key: str) -> Any:
        """Refused: raises :class:`InvalidRequestError`."""
        self._refuse("delete")


class TriggerEvent:
    """The event a handler receives.

    The doc's fields as attributes (``message_type``, ``event_type``, ``scope``, ``key``,
    ``old_value``, ``new_value``), plus ``revision``, ``timestamp``, ``trigger`` (its name)
    and ``store`` (a :class:`TriggerContext`).
    """

    __slots__ = (
        "_context",
        "_make_context",
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
        make_context: Callable[[], TriggerContext] | None = None,
    ) -> None:
        """``make_context`` builds ``event.store`` on first use."""
        self._record = record
        self.revision = record.revision
        self.timestamp = record.timestamp
        self.event_type = EVENT_TYPE_NAMES[record.type_code]
        self.scope = record.scope
        self.key = record.key
        self.trigger = trigger
        self._make_context = make_context
        self._context: TriggerContext | None = None
        self._old: Any = _UNSET
        self._new: Any = _UNSET

    @property
    def store(self) -> TriggerContext | None:
        """The handler's write context (:class:`TriggerContext`)."""
        if self._context is None and self._make_context is not None:
            self._context = self._make_context()
        return self._context

    @property
    def writes(self) -> list[Write]:
        """The writes the handler made through :attr:`store` (empty if it made none)."""
        return [] if self._context is None else self._context.writes

    # Values are decoded on first access, then kept, so a handler sees its own changes.
    @property
    def old_value(self) -> Any:
        """The value before the write (``None`` for created, and for a delete of nothing)."""
        if self._old is _UNSET:
            self._old = _decoded(self._record.old)
        return self._old

    @property
    def new_value(self) -> Any:
        """The value after the write (``None`` for deleted)."""
        if self._new is _UNSET:
            self._new = _decoded(self._record.new)
        return self._new

    @property
    def reason(self) -> str | None:
        """``"expired"`` on the deleted event of a key whose time-to-live ran out."""
        return self._record.reason

    def to_dict(self) -> dict[str, Any]:
        """The doc's event shape plus ``revision`` and ``timestamp`` (and ``reason``)."""
        return event_dict(self)

    def to_iii(self) -> dict[str, Any]:
        """The iii engine's wire event (``{"type": "state", "event_type": "state:..."}``)."""
        return iii_event_dict(self)

    def __repr__(self) -> str:
        return (
            f"<TriggerEvent {self.event_type} {self.scope}/{self.key} "
            f"revision={self.revision} trigger={self.trigger!r}>"
        )


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
