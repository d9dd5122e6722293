"""The iii function surface: ``call(function_id, payload)`` over a store.

Maps the six state functions, in the engine's ``state::set`` spelling and the doc's
``state.set`` spelling, onto store methods, decoding payloads with the engine's rules:
unknown fields are ignored, ``data`` is an alias of ``value``, and a payload that does not
decode fails with ``deserialization_error`` and a serde-style
message. The one difference between spellings: ``state::list`` returns the list of values
(the engine), ``state.list`` the ``{key: value}`` mapping (the doc).

Also the iii state worker's ``state::compare-and-set``, ``state::list_keys`` and
``state::list_entries``, and evstate's own ``evstate::batch`` and ``evstate::ttl`` (ids
outside iii's ``state::`` names, docs/protocol.md). ``ttl_ms`` in a ``state::set`` or
``state::compare-and-set`` payload is an evstate extension (iii ignores unknown fields).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from evstate.core.batch import Batch
from evstate.errors import FunctionNotFoundError, InvalidRequestError, StorageError
from evstate.events import Event
from evstate.values import serde_unexpected

__all__ = [
    "FUNCTION_IDS",
    "PayloadFields",
    "StateFunctions",
    "call_function",
    "run_update",
    "serde_type",
]


class StateFunctions(Protocol):
    """What :func:`call_function` needs of a store."""

    def set(  # noqa: D102
        self, scope: str, key: str, value: Any, *, ttl_ms: int | None = None
    ) -> dict[str, Any]: ...
    def get(self, scope: str, key: str) -> Any: ...  # noqa: D102
    def delete(self, scope: str, key: str) -> Any: ...  # noqa: D102
    def update(self, scope: str, key: str, ops: Any) -> dict[str, Any]: ...  # noqa: D102
    def list(self, scope: str) -> dict[str, Any]: ...  # noqa: D102
    def list_values(self, scope: str) -> builtins.list[Any]: ...  # noqa: D102
    def list_groups(self) -> dict[str, builtins.list[str]]: ...  # noqa: D102
    def compare_and_set(  # noqa: D102
        self, scope: str, key: str, expected: Any, value: Any, *, ttl_ms: int | None = None
    ) -> dict[str, Any]: ...
    def ttl(self, scope: str, key: str) -> int | None: ...  # noqa: D102
    def list_keys(self, scope: str) -> builtins.list[str]: ...  # noqa: D102
    def list_entries(  # noqa: D102
        self, scope: str, cursor: str | None, limit: Any, max_bytes: Any
    ) -> dict[str, Any]: ...
    def batch(self) -> Batch: ...  # noqa: D102


def serde_type(value: object) -> str:
    """Describe a JSON value the way serde's ``invalid type`` messages do."""
    return serde_unexpected(value)


class PayloadFields:
    """Field access with serde-style ``deserialization_error`` messages for one input struct.

    Shared by the state functions here and the server's ``kv_server::*`` functions.
    """

    def __init__(self, function_id: str, struct: str, payload: object) -> None:
        self.function_id = function_id
        if not isinstance(payload, Mapping):
            self.fail(f"invalid type: {serde_type(payload)}, expected struct {struct}")
        self.data: Mapping[str, Any] = payload  # type: ignore[assignment]

    def fail(self, detail: str) -> None:
        """Raise the ``deserialization_error`` for this function with ``detail``."""
        raise InvalidRequestError(f"Failed to deserialize input for {self.function_id}: {detail}")

    def string(self, name: str) -> str:
        """The required ``str`` field ``name``."""
        if name not in self.data:
            self.fail(f"missing field `{name}`")
        value = self.data[name]
        if type(value) is not str:
            self.fail(f"invalid type: {serde_type(value)}, expected a string")
        return value  # type: ignore[no-any-return]

    def value(self) -> Any:
        """The required ``value`` field (alias ``data``); ``null`` allowed."""
        for name in ("value", "data"):
            if name in self.data:
                return self.data[name]
        self.fail("missing field `value`")

    def required(self, name: str) -> Any:
        """The required field ``name``, of any type."""
        if name not in self.data:
            self.fail(f"missing field `{name}`")
        return self.data[name]

    def optional(self, name: str) -> Any:
        """The optional field ``name``; ``None`` when left out or ``null`` (serde's rule)."""
        return self.data.get(name)


def _set(store: StateFunctions, fid: str, payload: object) -> Any:
    p = PayloadFields(fid, "StateSetInput", payload)
    scope, key, value = p.string("scope"), p.string("key"), p.value()
    ttl_ms = p.optional("ttl_ms")  # an evstate extension (docs/api.md, "Time-to-live")
    if ttl_ms is None:
        return store.set(scope, key, value)
    return store.set(scope, key, value, ttl_ms=ttl_ms)


def _get(store: StateFunctions, fid: str, payload: object) -> Any:
    p = PayloadFields(fid, "StateGetInput", payload)
    return store.get(p.string("scope"), p.string("key"))


def _delete(store: StateFunctions, fid: str, payload: object) -> Any:
    p = PayloadFields(fid, "StateDeleteInput", payload)
    return store.delete(p.string("scope"), p.string("key"))


def run_update(store: StateFunctions, p: PayloadFields, scope_field: str) -> Any:
    """``store.update`` with the payload's ``ops``; a malformed op fails like the payload.

    Shared by ``state::update`` (scope field ``scope``) and ``kv_server::update``
    (``index``): an op shape error reads ``Failed to deserialize input for <fid>: ...``.
    """
    scope, key, ops = p.string(scope_field), p.string("key"), p.required("ops")
    try:
        return store.update(scope, key, ops)
    except InvalidRequestError as exc:
        if exc.code != "deserialization_error" or exc.message.startswith("Failed to"):
            raise
        raise InvalidRequestError(
            f"Failed to deserialize input for {p.function_id}: {exc.message}", code=exc.code
        ) from None


def _update(store: StateFunctions, fid: str, payload: object) -> Any:
    return run_update(store, PayloadFields(fid, "StateUpdateInput", payload), "scope")


def _list_values(store: StateFunctions, fid: str, payload: object) -> Any:
    return store.list_values(PayloadFields(fid, "StateListInput", payload).string("scope"))


def _list_mapping(store: StateFunctions, fid: str, payload: object) -> Any:
    return store.list(PayloadFields(fid, "StateListInput", payload).string("scope"))


def _list_groups(store: StateFunctions, fid: str, payload: object) -> Any:
    PayloadFields(fid, "StateListGroupsInput", payload)
    return store.list_groups()


def _compare_and_set(store: StateFunctions, fid: str, payload: object) -> Any:
    p = PayloadFields(fid, "StateCompareAndSetInput", payload)
    scope, key = p.string("scope"), p.string("key")
    expected, value, ttl_ms = p.optional("expected"), p.value(), p.optional("ttl_ms")
    if ttl_ms is None:
        return store.compare_and_set(scope, key, expected, value)
    return store.compare_and_set(scope, key, expected, value, ttl_ms=ttl_ms)


def _ttl(store: StateFunctions, fid: str, payload: object) -> Any:
    p = PayloadFields(fid, "TtlInput", payload)
    return {"ttl_ms": store.ttl(p.string("scope"), p.string("key"))}


def _list_keys(store: StateFunctions, fid: str, payload: object) -> Any:
    return {
        "keys": store.list_keys(PayloadFields(fid, "StateListKeysInput", payload).string("scope"))
    }


def _list_entries(store: StateFunctions, fid: str, payload: object) -> Any:
    p = PayloadFields(fid, "StateListEntriesInput", payload)
    return store.list_entries(
        p.string("scope"), p.optional("cursor"), p.optional("limit"), p.optional("max_bytes")
    )


_BATCH_OPS = ("set", "update", "delete", "compare-and-set")


def _batch(store: StateFunctions, fid: str, payload: object) -> Any:
    """``evstate::batch {ops: [{op, scope, key, ...}, ...]}`` -> ``{revision, results}``."""
    p = PayloadFields(fid, "BatchInput", payload)
    ops = p.required("ops")
    if type(ops) is not list:
        p.fail(f"invalid type: {serde_type(ops)}, expected a sequence")
    batch = store.batch()
    with batch:
        for index, item in enumerate(ops):
            op = PayloadFields(fid, "BatchOp", item)
            kind = op.string("op")
            scope, key = op.string("scope"), op.string("key")
            if kind == "set":
                batch.set(scope, key, op.value(), ttl_ms=op.optional("ttl_ms"))
            elif kind == "update":
                batch.update(scope, key, op.required("ops"))
            elif kind == "delete":
                batch.delete(scope, key)
            elif kind == "compare-and-set":
                batch.compare_and_set(
                    scope, key, op.optional("expected"), op.value(), ttl_ms=op.optional("ttl_ms")
                )
            else:
                op.fail(
                    f"ops[{index}]: unknown variant `{kind}`, expected one of "
                    + ", ".join(f"`{name}`" for name in _BATCH_OPS)
                )
    return {"revision": batch.revision, "results": [_change(e) for e in batch.events]}


def _change(event: Event) -> dict[str, Any]:
    return {
        "event_type": event.event_type,
        "scope": event.scope,
        "key": event.key,
        "old_value": event.old_value,
        "new_value": event.new_value,
    }


_Handler = Callable[[StateFunctions, str, object], Any]

# function id -> (handler, iii error code and message prefix for storage failures)
_FUNCTIONS: dict[str, tuple[_Handler, str, str]] = {}
for _sep in ("::", "."):
    _FUNCTIONS[f"state{_sep}set"] = (_set, "SET_ERROR", "Failed to set value")
    _FUNCTIONS[f"state{_sep}get"] = (_get, "GET_ERROR", "Failed to get value")
    _FUNCTIONS[f"state{_sep}delete"] = (_delete, "DELETE_ERROR", "Failed to delete value")
    _FUNCTIONS[f"state{_sep}update"] = (_update, "UPDATE_ERROR", "Failed to update value")
    _FUNCTIONS[f"state{_sep}list_groups"] = (
        _list_groups,
        "LIST_GROUPS_ERROR",
        "Failed to list groups",
    )
_FUNCTIONS["state::list"] = (_list_values, "LIST_ERROR", "Failed to list values")
_FUNCTIONS["state::compare-and-set"] = (_compare_and_set, "CAS_ERROR", "CAS_ERROR")
_FUNCTIONS["state::list_keys"] = (_list_keys, "LIST_KEYS_ERROR", "LIST_KEYS_ERROR")
_FUNCTIONS["state::list_entries"] = (_list_entries, "LIST_ENTRIES_ERROR", "LIST_ENTRIES_ERROR")
_FUNCTIONS["evstate::batch"] = (_batch, "BATCH_ERROR", "BATCH_ERROR")
_FUNCTIONS["evstate::ttl"] = (_ttl, "TTL_ERROR", "TTL_ERROR")
_FUNCTIONS["state.list"] = (_list_mapping, "LIST_ERROR", "Failed to list values")

FUNCTION_IDS: tuple[str, ...] = tuple(sorted(_FUNCTIONS))

_MISSING: Any = object()


def call_function(store: StateFunctions, function_id: str, payload: object = _MISSING) -> Any:
    """Run state function ``function_id`` with ``payload`` against ``store``.

    An omitted payload means ``{}``. Returns what the engine's function returns (``None``
    where the engine sends no ``result``).

    Raises:
        FunctionNotFoundError: unknown id (code ``function_not_found``).
        InvalidRequestError: the payload does not decode (``deserialization_error``), or a
            value is rejected (``VALUE_TOO_LARGE``, ...).
        StorageError: the store failed; ``code`` is the engine's (``SET_ERROR``, ...).
    """
    entry = _FUNCTIONS.get(function_id) if isinstance(function_id, str) else None
    if entry is None:
        raise FunctionNotFoundError(f"Function {function_id} not found")
    handler, code, prefix = entry
    try:
        return handler(store, function_id, {} if payload is _MISSING else payload)
    except StorageError as exc:
        raise type(exc)(f"{prefix}: {exc.message}", code=code) from exc
