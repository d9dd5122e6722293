"""The redis store's reads: ``get``, the listings and ``list_groups``, answered by Redis.

Reads go to Redis, so they see every process's writes. Values are stored as compact JSON
text and decoded into fresh objects here. ``list_entries`` pages with the core's
:class:`~evstate.core.listing.Listings`: the first page reads the revision and the scope in
one script; a listing continued by another process of the fleet (or after a restart) is
rebuilt at its revision from the stream and snapshots, as ``at()`` is.
"""

from __future__ import annotations

import builtins
from typing import Any

from evstate.backends.redis.client import Backend, decode_name, load_value
from evstate.backends.redis.scripts import META, STATE_PREFIX, TTL, state_key
from evstate.backends.redis.timeline import RedisTimeline
from evstate.core.arguments import check_name
from evstate.core.listing import ListingMethods, Listings, PinnedScope
from evstate.core.replay import live_items
from evstate.errors import InvalidCursorError
from evstate.values import encode_value

__all__ = ["RedisReads"]


def _name(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


class RedisReads(ListingMethods):
    """The read methods of :class:`~evstate.backends.redis.store.RedisStore` (a mixin)."""

    _backend: Backend
    _timeline: RedisTimeline
    _listings: Listings

    def _check_open(self) -> None:
        raise NotImplementedError

    def _head(self) -> int:
        raise NotImplementedError

    def _raw_value(self, scope: str, key: str) -> bytes | None:
        """The CBOR encoding of the value (for :class:`~evstate.core.triggers.TriggerContext`)."""
        text = self._read_key(scope, key)[0]
        return None if text is None else encode_value(load_value(text))

    def _read_key(self, scope: str, key: str) -> tuple[bytes | None, int | None, int]:
        """``(JSON text, deadline, Redis's now)``; a key past its deadline reads as missing."""
        value, deadline, now = self._backend.script(
            "read_key", [state_key(scope), TTL], [_name(scope), _name(key)], "read"
        )
        return value or None, int(deadline) if deadline else None, int(now)

    def get(self, scope: str, key: str) -> Any:
        """The value of ``scope/key`` (a fresh copy), or ``None`` if it does not exist."""
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        text = self._read_key(scope, key)[0]
        return None if text is None else load_value(text, f"{scope}/{key}")

    def ttl(self, scope: str, key: str) -> int | None:
        """Milliseconds until ``scope/key`` expires (Redis's clock); ``None`` if no TTL."""
        self._check_open()
        check_name("scope", scope)
        check_name("key", key)
        text, deadline, now = self._read_key(scope, key)
        if text is None or deadline is None:
            return None
        return deadline - now if deadline > now else None

    def _hash(self, scope: str) -> dict[bytes, bytes]:
        """The scope's live fields and values, in Redis's hash order."""
        pairs = self._backend.script(
            "read_scope", [state_key(scope), TTL], [_name(scope), "pairs"], "read"
        )
        return {pairs[i]: pairs[i + 1] for i in range(0, len(pairs), 2)}

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

    def list_keys(self, scope: str) -> builtins.list[str]:
        """The keys of ``scope``, sorted (``HKEYS``)."""
        self._check_open()
        check_name("scope", scope)
        keys = self._backend.script(
            "read_scope", [state_key(scope), TTL], [_name(scope), "keys"], "read"
        )
        return sorted(decode_name(k) for k in keys)

    def _listing_scope_now(self, scope: str) -> PinnedScope:
        revision, now, pairs = self._backend.script(
            "scope_state", [META, state_key(scope), TTL], [_name(scope)], "read a scope"
        )
        values = {decode_name(pairs[i]): pairs[i + 1] for i in range(0, len(pairs), 2)}
        return PinnedScope(
            int(revision), values, lambda text: load_value(text, scope), as_of_ms=int(now)
        )

    def _listing_scope_at(self, scope: str, revision: int, as_of_ms: int) -> PinnedScope:
        if revision > self._head():
            raise InvalidCursorError("INVALID_CURSOR: the cursor names a revision not reached")
        scopes, _ = self._timeline.state_at(revision)
        live = live_items(scopes.get(scope, {}), as_of_ms)
        return PinnedScope(revision, live, as_of_ms=as_of_ms)

    def _scopes(self) -> builtins.list[str]:
        keys = self._backend.script("scopes", [TTL], [], "list scopes")
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
        """``{"groups": [...]}``: sorted scopes holding at least one key.

        Read by one script (``SCAN state:*`` inside it), so it is atomic like every write.
        """
        self._check_open()
        return {"groups": self._scopes()}
