"""The historical ``kv_server::*`` functions, served when ``kv_server`` is on.

The iii engine's ``modules::kv_server::KvServer`` (removed from iii in March 2026) used the
same key-value store as the state module, with ``index`` where state says ``scope``. Here
they run on the one evstate store, so a ``kv_server::set`` and a ``state::set`` of the same
index/scope and key address the same value, and kv writes are events that state triggers
see (the historical module had no triggers).

| function | payload | result |
|---|---|---|
| ``kv_server::get`` | ``index``, ``key`` | the value; no ``result`` when missing |
| ``kv_server::set`` | ``index``, ``key``, ``value`` | ``{"old_value", "new_value"}`` |
| ``kv_server::delete`` | ``index``, ``key`` | ``{"old_value"}`` |
| ``kv_server::update`` | ``index``, ``key``, ``ops`` | ``{"old_value", "new_value"}`` (+errors) |
| ``kv_server::list`` | ``index`` | the values, in key insertion order |
| ``kv_server::list_keys_with_prefix`` | ``prefix`` | the index names starting with ``prefix`` |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evstate.core.functions import PayloadFields, StateFunctions, run_update

__all__ = ["KV_FUNCTION_IDS", "KV_READS", "call_kv_function"]


def _get(store: StateFunctions, fid: str, payload: object) -> Any:
    p = PayloadFields(fid, "KvGetInput", payload)
    return store.get(p.string("index"), p.string("key"))


def _set(store: StateFunctions, fid: str, payload: object) -> Any:
    p = PayloadFields(fid, "KvSetInput", payload)
    return store.set(p.string("index"), p.string("key"), p.required("value"))


def _delete(store: StateFunctions, fid: str, payload: object) -> Any:
    p = PayloadFields(fid, "KvDeleteInput", payload)
    return {"old_value": store.delete(p.string("index"), p.string("key"))}


def _update(store: StateFunctions, fid: str, payload: object) -> Any:
    return run_update(store, PayloadFields(fid, "KvUpdateInput", payload), "index")


def _list(store: StateFunctions, fid: str, payload: object) -> Any:
    return store.list_values(PayloadFields(fid, "KvListInput", payload).string("index"))


def _list_keys_with_prefix(store: StateFunctions, fid: str, payload: object) -> Any:
    prefix = PayloadFields(fid, "KvListKeysWithPrefixInput", payload).string("prefix")
    return [name for name in store.list_groups()["groups"] if name.startswith(prefix)]


_FUNCTIONS: dict[str, Callable[[StateFunctions, str, object], Any]] = {
    "kv_server::get": _get,
    "kv_server::set": _set,
    "kv_server::delete": _delete,
    "kv_server::update": _update,
    "kv_server::list": _list,
    "kv_server::list_keys_with_prefix": _list_keys_with_prefix,
}

KV_FUNCTION_IDS: tuple[str, ...] = tuple(sorted(_FUNCTIONS))
KV_READS: frozenset[str] = frozenset({"kv_server::get"})
"""Calls that only read one key from memory: cheap enough to answer on the event loop."""


def call_kv_function(store: StateFunctions, function_id: str, payload: object) -> Any:
    """Run ``kv_server`` function ``function_id`` with ``payload`` against ``store``.

    Raises:
        KeyError: ``function_id`` is not a kv_server function (callers check first).
        InvalidRequestError: the payload does not decode (``deserialization_error``), or a
            value is rejected (``VALUE_TOO_LARGE``, ...).
        StorageError: the store failed (its own code).
    """
    return _FUNCTIONS[function_id](store, function_id, payload)
