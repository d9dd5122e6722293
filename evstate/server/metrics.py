"""What ``evstate serve`` tells monitoring: ``/metrics`` (Prometheus text) and ``/health``.

Three parts:

- :class:`CountingStore` stands between the server's function router and the store and
  counts every store call by function (reads and writes apart) and every error by its code.
  The counts are plain integers under one lock: a call costs about a microsecond more, and
  the Prometheus objects are built only when someone scrapes.
- :class:`ServerMetrics` builds the ``evstate_*`` families at scrape time from the counts,
  ``store.stats()``, ``store.trigger_status()``, the timing instruments of
  :mod:`evstate.timings` (fsync and snapshot durations) and the server's connection counts,
  through a prometheus-client custom collector (docs/console.md lists every metric).
- :func:`health_report`: the ``/health`` answer, 503 with the reason once the store has
  failed closed (a failed fsync, a closed store, an unreachable backend).
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from evstate.core.batch import Batch
from evstate.core.functions import StateFunctions
from evstate.core.store import Store
from evstate.errors import Error, StoreClosedError, StoreFailedError
from evstate.timings import FSYNC_SECONDS, SNAPSHOT_SECONDS, HistogramReading

__all__ = [
    "READ_FUNCTIONS",
    "WRITE_FUNCTIONS",
    "CallCounts",
    "CountingStore",
    "ServerMetrics",
    "health_report",
]

READ_FUNCTIONS = ("get", "list", "list_values", "list_groups", "list_keys", "list_entries", "ttl")
"""Store functions counted in ``evstate_reads_total``."""

WRITE_FUNCTIONS = ("set", "update", "delete", "compare_and_set", "batch")
"""Store functions counted in ``evstate_writes_total`` (a batch counts once)."""


class CallCounts:
    """Calls by store function and errors by code (thread-safe counters).

    Calls are counted in one dictionary per thread (no lock, no lost increments however
    many store threads count at once) and summed when read; errors, which are rare, under
    a lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self._tallies: list[dict[str, int]] = []
        self.errors: dict[str, int] = {}
        self.failure: str | None = None  # why the store failed closed, once a call saw it

    def _tally(self) -> dict[str, int]:
        tally = dict.fromkeys(READ_FUNCTIONS + WRITE_FUNCTIONS, 0)
        self._local.tally = tally
        with self._lock:
            self._tallies.append(tally)
        return tally

    def called(self, function: str) -> None:
        """Count one call of ``function`` (a name in READ_FUNCTIONS or WRITE_FUNCTIONS)."""
        try:
            tally: dict[str, int] = self._local.tally
        except AttributeError:
            tally = self._tally()
        tally[function] += 1

    def failed(self, exc: BaseException) -> None:
        """Count the error ``exc`` by its code (``internal`` for a non-evstate one)."""
        code = exc.code if isinstance(exc, Error) else "internal"
        with self._lock:
            self.errors[code] = self.errors.get(code, 0) + 1
            if isinstance(exc, StoreFailedError) and self.failure is None:
                self.failure = exc.message

    def read(self) -> tuple[dict[str, int], dict[str, int]]:
        """Copies of (calls by function, errors by code)."""
        with self._lock:
            tallies, errors = list(self._tallies), dict(self.errors)
        calls = dict.fromkeys(READ_FUNCTIONS + WRITE_FUNCTIONS, 0)
        for tally in tallies:  # other threads only change values here, never the keys
            for function, count in tally.items():
                calls[function] += count
        return calls, errors


class CountingStore:
    """The store functions of ``store`` (``StateFunctions``), each call counted.

    Passed to the router in place of the store: every worker's ``state::*`` and
    ``kv_server::*`` call goes through here. Errors are counted by the code of the
    exception the store raised (``VALUE_TOO_LARGE``, ``deserialization_error``,
    ``store_failed``, ...); a batch is one write, and the errors of its commit are not
    counted (it commits when the caller's ``with`` block ends, outside this wrapper). Each
    method is written out (no shared wrapper): this is on every call's path.
    """

    def __init__(self, store: StateFunctions, counts: CallCounts) -> None:
        self._store = store
        self.counts = counts
        self._called = counts.called
        self._failed = counts.failed

    def set(self, scope: str, key: str, value: Any, *, ttl_ms: int | None = None) -> Any:
        """``store.set``, counted."""
        self._called("set")
        try:
            if ttl_ms is None:
                return self._store.set(scope, key, value)
            return self._store.set(scope, key, value, ttl_ms=ttl_ms)
        except Exception as exc:
            self._failed(exc)
            raise

    def get(self, scope: str, key: str) -> Any:
        """``store.get``, counted."""
        self._called("get")
        try:
            return self._store.get(scope, key)
        except Exception as exc:
            self._failed(exc)
            raise

    def delete(self, scope: str, key: str) -> Any:
        """``store.delete``, counted."""
        self._called("delete")
        try:
            return self._store.delete(scope, key)
        except Exception as exc:
            self._failed(exc)
            raise

    def update(self, scope: str, key: str, ops: Any) -> Any:
        """``store.update``, counted."""
        self._called("update")
        try:
            return self._store.update(scope, key, ops)
        except Exception as exc:
            self._failed(exc)
            raise

    def list(self, scope: str) -> Any:
        """``store.list``, counted."""
        self._called("list")
        try:
            return self._store.list(scope)
        except Exception as exc:
            self._failed(exc)
            raise

    def list_values(self, scope: str) -> Any:
        """``store.list_values``, counted."""
        self._called("list_values")
        try:
            return self._store.list_values(scope)
        except Exception as exc:
            self._failed(exc)
            raise

    def list_groups(self) -> Any:
        """``store.list_groups``, counted."""
        self._called("list_groups")
        try:
            return self._store.list_groups()
        except Exception as exc:
            self._failed(exc)
            raise

    def compare_and_set(
        self, scope: str, key: str, expected: Any, value: Any, *, ttl_ms: int | None = None
    ) -> Any:
        """``store.compare_and_set``, counted."""
        self._called("compare_and_set")
        try:
            if ttl_ms is None:
                return self._store.compare_and_set(scope, key, expected, value)
            return self._store.compare_and_set(scope, key, expected, value, ttl_ms=ttl_ms)
        except Exception as exc:
            self._failed(exc)
            raise

    def ttl(self, scope: str, key: str) -> Any:
        """``store.ttl``, counted."""
        self._called("ttl")
        try:
            return self._store.ttl(scope, key)
        except Exception as exc:
            self._failed(exc)
            raise

    def list_keys(self, scope: str) -> Any:
        """``store.list_keys``, counted."""
        self._called("list_keys")
        try:
            return self._store.list_keys(scope)
        except Exception as exc:
            self._failed(exc)
            raise

    def list_entries(self, scope: str, cursor: str | None, limit: Any, max_bytes: Any) -> Any:
        """``store.list_entries``, counted."""
        self._called("list_entries")
        try:
            return self._store.list_entries(scope, cursor, limit, max_bytes)
        except Exception as exc:
            self._failed(exc)
            raise

    def batch(self) -> Batch:
        """``store.batch``, counted as one write."""
        self._called("batch")
        return self._store.batch()


def _histogram(name: str, doc: str, reading: HistogramReading) -> HistogramMetricFamily:
    buckets: builtins.list[tuple[str, float]] = [
        (repr(bound), float(n)) for bound, n in reading.buckets
    ]
    buckets.append(("+Inf", float(reading.count)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=reading.total)


def _store_families(stats: dict[str, Any]) -> Iterator[Metric]:
    """The gauges read from ``store.stats()`` (those a store kind does not report left out)."""
    gauges = (
        ("evstate_revision", "Revision of the newest event.", stats["revision"]),
        (
            "evstate_durable_revision",
            "Highest revision on stable storage.",
            stats["durable_revision"],
        ),
        ("evstate_keys", "Keys in the store.", stats["keys"]),
        ("evstate_scopes", "Scopes holding at least one key.", stats["scopes"]),
        ("evstate_log_bytes", "Bytes of the event log retained.", stats.get("log_bytes")),
        ("evstate_log_segments", "Segment files of the log.", stats.get("segments")),
        ("evstate_snapshot_bytes", "Bytes of snapshot files.", stats.get("snapshot_bytes")),
        (
            "evstate_snapshot_revisions_behind",
            "Events written since the newest snapshot (what a restart replays).",
            stats["revision"] - (stats.get("last_snapshot_revision") or 0),
        ),
    )
    for name, doc, value in gauges:
        if isinstance(value, int | float):
            yield GaugeMetricFamily(name, doc, value=value)


class _StoreCollector(Collector):
    """Builds the ``evstate_*`` families from the live objects at each scrape."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        calls, errors = m.counts.read()
        reads = CounterMetricFamily(
            "evstate_reads", "Store reads served, by function.", labels=["function"]
        )
        writes = CounterMetricFamily(
            "evstate_writes", "Store writes served, by function.", labels=["function"]
        )
        for function in READ_FUNCTIONS:
            reads.add_metric([function], calls[function])
        for function in WRITE_FUNCTIONS:
            writes.add_metric([function], calls[function])
        yield reads
        yield writes
        failed = CounterMetricFamily(
            "evstate_errors", "Store calls that failed, by error code.", labels=["code"]
        )
        for code in sorted(errors):
            failed.add_metric([code], errors[code])
        yield failed
        try:
            stats: dict[str, Any] | None = m.store.stats()
            problem = m.counts.failure or m.store.failure
        except Error as exc:  # closed, failed, or its backend unreachable
            stats, problem = None, exc.message
        if stats is not None:
            yield from _store_families(stats)
        yield _histogram(
            "evstate_fsync_seconds", "Time each data fsync took.", FSYNC_SECONDS.read()
        )
        yield _histogram(
            "evstate_snapshot_duration_seconds",
            "Time each snapshot took to write, until durable.",
            SNAPSHOT_SECONDS.read(),
        )
        age = m.snapshot_age()
        if age is not None:
            yield GaugeMetricFamily(
                "evstate_snapshot_age_seconds", "Seconds since the newest snapshot.", value=age
            )
        yield from self._trigger_families(m.store)
        connections = GaugeMetricFamily(
            "evstate_connections", "Open connections, by kind.", labels=["kind"]
        )
        for kind, count in sorted(m.connections().items()):
            connections.add_metric([kind], count)
        yield connections
        yield GaugeMetricFamily(
            "evstate_store_failed",
            "1 once the store has failed closed (read-only, closed or unreachable), else 0.",
            value=0 if problem is None else 1,
        )

    @staticmethod
    def _trigger_families(store: Store) -> Iterator[Metric]:
        try:
            status = store.trigger_status()
        except Error:
            return
        lag = GaugeMetricFamily(
            "evstate_trigger_lag_events", "Events a trigger is behind the head.", labels=["trigger"]
        )
        cursor = GaugeMetricFamily(
            "evstate_trigger_cursor", "Last revision a trigger processed.", labels=["trigger"]
        )
        parked = GaugeMetricFamily(
            "evstate_trigger_parked_events", "Events parked as dead letters.", labels=["trigger"]
        )
        delivered = CounterMetricFamily(
            "evstate_trigger_delivered",
            "Events delivered since the process started.",
            labels=["trigger"],
        )
        for name in sorted(status):
            entry = status[name]
            lag.add_metric([name], entry.get("lag") or 0)
            cursor.add_metric([name], entry.get("cursor") or 0)
            parked.add_metric([name], entry.get("parked") or 0)
            delivered.add_metric([name], entry.get("delivered") or 0)
        yield from (lag, cursor, parked, delivered)
        yield GaugeMetricFamily(
            "evstate_parked_events",
            "Events parked, all triggers together.",
            value=sum(entry.get("parked") or 0 for entry in status.values()),
        )


class ServerMetrics:
    """The server's Prometheus registry: ``evstate_*`` families and process numbers.

    ``connections()`` answers open connections by kind (``worker``, ``console``);
    ``snapshot_age()`` the seconds since the newest snapshot, or None when unknown.
    """

    def __init__(
        self,
        store: Store,
        counts: CallCounts,
        connections: Callable[[], dict[str, int]],
        snapshot_age: Callable[[], float | None],
    ) -> None:
        self.store = store
        self.counts = counts
        self.connections = connections
        self.snapshot_age = snapshot_age
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StoreCollector(self))
        # evstate_process_cpu_seconds_total, _resident_memory_bytes, _open_fds, ...
        self.registry.register(ProcessCollector(namespace="evstate", registry=None))

    def render(self) -> bytes:
        """The Prometheus text exposition (version 0.0.4) of every metric, now.

        Blocking (reads the store's files for ``stats()``): call it off the event loop.
        """
        return generate_latest(self.registry)


def health_report(
    store: Store, failure: str | None, *, detail: bool = True
) -> tuple[int, dict[str, Any]]:
    """``(HTTP status, JSON body)`` of ``/health``.

    200 ``{"status": "ok", ...}`` while the store serves; 503 ``{"status": "failed",
    "reason": ...}`` once it failed closed: closed, read-only after a failed fsync
    (``failure``, as a call saw it), or its backend unreachable. ``detail=False`` leaves
    out everything but ``status`` (for callers without the auth token). Blocking: reads
    ``store.stats()``.
    """
    reason = failure or store.failure
    stats: dict[str, Any] = {}
    if store.closed:
        reason = "the store is closed"
    elif reason is None:
        try:
            stats = store.stats()
        except StoreClosedError:
            reason = "the store is closed"
        except Error as exc:  # StoreFailedError, BackendUnavailableError, StorageError
            reason = exc.message
    if reason is not None:
        body: dict[str, Any] = {"status": "failed"}
        if detail:
            body["reason"] = reason
        return 503, body
    if not detail:
        return 200, {"status": "ok"}
    return 200, {
        "status": "ok",
        "revision": stats["revision"],
        "durable_revision": stats["durable_revision"],
        "keys": stats["keys"],
        "store": "redis" if store.config.adapter == "redis" else store.config.store_method,
    }
