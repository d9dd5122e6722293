"""Timing instruments that any layer may record into: histograms of seconds.

A leaf module with no dependencies, so the storage code can record a duration (the file
store's fsyncs) and the server can export it (``/metrics``) without either importing the
other. Recording is one lock and a few additions: cheap enough for every fsync.

The instruments are process-wide: every store of the process records into the same ones.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass

__all__ = [
    "FSYNC_BUCKETS",
    "FSYNC_SECONDS",
    "HistogramReading",
    "SNAPSHOT_BUCKETS",
    "SNAPSHOT_SECONDS",
    "SecondsHistogram",
]

FSYNC_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Upper bounds (seconds) for fsync latency: 100 us (a fast SSD) to 5 s (a stalled disk)."""

SNAPSHOT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Upper bounds (seconds) for a snapshot: from a small store to millions of keys."""


@dataclass(frozen=True, slots=True)
class HistogramReading:
    """A consistent copy of a histogram.

    ``buckets`` pairs each upper bound with the number of observations at or below it
    (cumulative, as Prometheus exposes them); observations above the last bound count only
    in ``count``. ``last_observed`` is the wall-clock time (seconds since the epoch) of the
    newest observation, None before the first.
    """

    buckets: tuple[tuple[float, int], ...]
    count: int
    total: float
    last_observed: float | None


class SecondsHistogram:
    """Durations in seconds counted into fixed buckets (thread-safe)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        """A histogram with these upper bounds (seconds, increasing)."""
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("bucket bounds must be increasing and not empty")
        self.bounds = bounds
        self._lock = threading.Lock()
        self._counts = [0] * (len(bounds) + 1)  # the last slot: above every bound
        self._count = 0
        self._total = 0.0
        self._last: float | None = None

    def observe(self, seconds: float) -> None:
        """Count one duration."""
        slot = bisect.bisect_left(self.bounds, seconds)  # a value equal to a bound is in it
        now = time.time()
        with self._lock:
            self._counts[slot] += 1
            self._count += 1
            self._total += seconds
            self._last = now

    def read(self) -> HistogramReading:
        """The counts so far (see :class:`HistogramReading`)."""
        with self._lock:
            counts = list(self._counts)
            count, total, last = self._count, self._total, self._last
        cumulative = []
        running = 0
        for bound, n in zip(self.bounds, counts, strict=False):
            running += n
            cumulative.append((bound, running))
        return HistogramReading(tuple(cumulative), count, total, last)


FSYNC_SECONDS = SecondsHistogram(FSYNC_BUCKETS)
"""Every data fsync of a store file (recorded by the file store's DiskIO.fsync)."""

SNAPSHOT_SECONDS = SecondsHistogram(SNAPSHOT_BUCKETS)
"""Every snapshot a store writes, from start to durable (recorded by the store kinds
that write snapshot files)."""
