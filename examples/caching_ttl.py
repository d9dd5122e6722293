"""The State module doc's "Example: Caching with TTL", with evstate's native time-to-live.

    .venv/bin/python examples/caching_ttl.py                 # http://127.0.0.1:8082

- ``get_or_fetch_data(key)``: answer ``cache/<key>`` if it is there; otherwise fetch fresh
  data (a stand-in for the doc's ``fetchFromAPI``) and store it with ``ttl_ms``. The doc
  keeps an ``expiresAt`` field and a cron job (``cleanup-cache``, every 5 minutes) to delete
  stale entries; here the store does both: an entry is gone for every read the moment its
  TTL runs out, and the store writes its expiry as a ``deleted`` event
  (``reason: "expired"``) that the ``log-expiry`` trigger prints.
- ``--ttl`` changes the TTL (the tests use fractions of a second).
- ``GET /data/<key>`` answers ``{"key", "data", "upstream_fetches", "ttl_ms"}``;
  ``GET /cache`` the cache scope.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

from _web import JsonHandler, Route, arguments, serve

import evstate

DEFAULT_TTL_S = 60.0  # the doc's 1 minute TTL


def get_or_fetch_data(
    store: evstate.Store, key: str, fetch: Callable[[str], Any], *, ttl_s: float = DEFAULT_TTL_S
) -> Any:
    """The doc's ``getOrFetchData``: the cached data while fresh, else fetch and cache it."""
    cached = store.call("state.get", {"scope": "cache", "key": key})
    if cached is not None:
        return cached
    data = fetch(key)
    ttl_ms = max(1, int(ttl_s * 1000))
    store.call("state.set", {"scope": "cache", "key": key, "value": data, "ttl_ms": ttl_ms})
    return data


def log_expiry(event: evstate.TriggerEvent) -> None:
    """The ``log-expiry`` trigger: print each cache entry the store expired."""
    if event.reason == "expired":
        print(f"expired: {event.key} (was {event.old_value})", flush=True)


class Upstream:
    """A stand-in for the doc's ``fetchFromAPI``: slow-ish, and it counts its calls."""

    def __init__(self) -> None:
        self.fetches = 0
        self._lock = threading.Lock()

    def __call__(self, key: str) -> dict[str, Any]:
        with self._lock:
            self.fetches += 1
        time.sleep(0.01)
        fetched_at = time.time_ns() // 1_000_000
        return {"value": hashlib.sha256(key.encode()).hexdigest()[:12], "fetchedAt": fetched_at}


def routes(store: evstate.Store, upstream: Upstream, ttl_s: float) -> list[Route]:
    """GET /data/<key>, GET /cache."""

    def data(request: JsonHandler, key: str) -> tuple[int, Any]:
        value = get_or_fetch_data(store, key, upstream, ttl_s=ttl_s)
        return 200, {
            "key": key,
            "data": value,
            "upstream_fetches": upstream.fetches,
            "ttl_ms": store.ttl("cache", key),
        }

    def cache(request: JsonHandler) -> tuple[int, Any]:
        return 200, store.list("cache")

    return [("GET", r"/data/([^/]+)", data), ("GET", r"/cache", cache)]


def main() -> None:
    parser = arguments(__doc__.splitlines()[0], "cache", 8082)
    parser.add_argument("--ttl", type=float, default=DEFAULT_TTL_S, help="seconds (60)")
    args = parser.parse_args()
    store = evstate.open(args.dir)
    store.trigger("log-expiry", log_expiry, scope="cache")
    print(f"store {store.path}: ttl {args.ttl}s", flush=True)
    serve(routes(store, Upstream(), args.ttl), args.host, args.port, store.close)


if __name__ == "__main__":
    main()
