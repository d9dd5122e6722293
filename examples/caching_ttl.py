"""The State module doc's "Example: Caching with TTL", as an HTTP service.

    .venv/bin/python examples/caching_ttl.py                 # http://127.0.0.1:8082

- ``get_or_fetch_data(key)``: answer ``cache/<key>`` while its ``expiresAt`` is in the
  future; otherwise fetch fresh data (a stand-in for the doc's ``fetchFromAPI``) and store
  ``{"data", "expiresAt": now + TTL}``.
- ``cleanup_cache()`` deletes the expired entries; it runs periodically, like the doc's
  ``cleanup-cache`` cron trigger (``*/5 * * * *``: every 5 minutes). ``--ttl`` and
  ``--cleanup-every`` change both periods (the tests use fractions of a second).
- ``GET /data/<key>`` answers ``{"key", "data", "upstream_fetches"}``; ``GET /cache`` the
  cache scope; ``POST /cleanup`` runs a cleanup now.
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
DEFAULT_CLEANUP_EVERY_S = 300.0  # the doc's cron: */5 * * * *


def now_ms() -> int:
    return int(time.time() * 1000)


def get_or_fetch_data(
    store: evstate.Store, key: str, fetch: Callable[[str], Any], *, ttl_s: float = DEFAULT_TTL_S
) -> Any:
    """The doc's ``getOrFetchData``: the cached data while fresh, else fetch and cache it."""
    cached = store.call("state.get", {"scope": "cache", "key": key})
    if cached and cached["expiresAt"] > now_ms():
        return cached["data"]
    data = fetch(key)
    store.call(
        "state.set",
        {
            "scope": "cache",
            "key": key,
            "value": {"data": data, "expiresAt": now_ms() + int(ttl_s * 1000)},
        },
    )
    return data


def cleanup_cache(store: evstate.Store) -> int:
    """The doc's ``cleanupCache``: delete every expired entry; returns how many."""
    cache = store.call("state.list", {"scope": "cache"})
    now = now_ms()
    deleted = 0
    for key, value in cache.items():
        if value["expiresAt"] < now:
            # Read again first: a refresh since the list must not be thrown away.
            current = store.get("cache", key)
            if current is not None and current["expiresAt"] < now:
                store.call("state.delete", {"scope": "cache", "key": key})
                deleted += 1
    return deleted


class Every:
    """Run ``job`` every ``period`` seconds on a thread (the doc's cron trigger)."""

    def __init__(self, period: float, job: Callable[[], Any]) -> None:
        self._period = period
        self._job = job
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cleanup-cache", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self._job()
            except Exception as exc:  # a failed run must not end the schedule
                print(f"cleanup failed: {exc}", flush=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Upstream:
    """A stand-in for the doc's ``fetchFromAPI``: slow-ish, and it counts its calls."""

    def __init__(self) -> None:
        self.fetches = 0
        self._lock = threading.Lock()

    def __call__(self, key: str) -> dict[str, Any]:
        with self._lock:
            self.fetches += 1
        time.sleep(0.01)
        return {"value": hashlib.sha256(key.encode()).hexdigest()[:12], "fetchedAt": now_ms()}


def routes(store: evstate.Store, upstream: Upstream, ttl_s: float) -> list[Route]:
    """GET /data/<key>, GET /cache, POST /cleanup."""

    def data(request: JsonHandler, key: str) -> tuple[int, Any]:
        value = get_or_fetch_data(store, key, upstream, ttl_s=ttl_s)
        return 200, {"key": key, "data": value, "upstream_fetches": upstream.fetches}

    def cache(request: JsonHandler) -> tuple[int, Any]:
        return 200, store.list("cache")

    def cleanup(request: JsonHandler) -> tuple[int, Any]:
        return 200, {"deleted": cleanup_cache(store)}

    return [
        ("GET", r"/data/([^/]+)", data),
        ("GET", r"/cache", cache),
        ("POST", r"/cleanup", cleanup),
    ]


def main() -> None:
    parser = arguments(__doc__.splitlines()[0], "cache", 8082)
    parser.add_argument("--ttl", type=float, default=DEFAULT_TTL_S, help="seconds (60)")
    parser.add_argument(
        "--cleanup-every", type=float, default=DEFAULT_CLEANUP_EVERY_S, help="seconds (300)"
    )
    args = parser.parse_args()
    store = evstate.open(args.dir)

    def cleanup() -> None:
        deleted = cleanup_cache(store)
        if deleted:
            print(f"cleanup: deleted {deleted} expired entries", flush=True)

    cron = Every(args.cleanup_every, cleanup)
    print(f"store {store.path}: ttl {args.ttl}s, cleanup every {args.cleanup_every}s", flush=True)

    def stop() -> None:
        cron.stop()
        store.close()

    serve(routes(store, Upstream(), args.ttl), args.host, args.port, stop)


if __name__ == "__main__":
    main()
