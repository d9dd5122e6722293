"""The numbers behind the ``/stats`` charts: ``store.stats()`` sampled over time.

The server samples once a second (off the event loop: ``stats()`` lists the store's files)
and keeps the newest :data:`RING_SIZE` samples, an hour, in a ring: memory stays bounded
however long it runs. Each sample is what the charts plot: the write rate since the sample
before (revisions per second), the log and snapshot sizes, the key count.

The sampler also notices when a new snapshot appears (``last_snapshot_revision`` moves),
which dates the newest snapshot for ``evstate_snapshot_age_seconds`` when the store kind
does not record its snapshots itself (:data:`evstate.timings.SNAPSHOT_SECONDS`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from evstate.timings import SNAPSHOT_SECONDS

__all__ = ["RING_SIZE", "SAMPLE_SECONDS", "StatsSampler"]

SAMPLE_SECONDS = 1.0
RING_SIZE = 3600


class StatsSampler:
    """A bounded ring of samples (thread-safe: appended by one thread, read by any)."""

    def __init__(self, size: int = RING_SIZE) -> None:
        self._lock = threading.Lock()
        self._ring: deque[dict[str, Any]] = deque(maxlen=size)
        self._last: dict[str, Any] | None = None
        self._snapshot_revision: int | None = None
        self._snapshot_seen: float | None = None  # wall time a new snapshot was noticed

    def add(self, stats: dict[str, Any], now: float | None = None) -> dict[str, Any]:
        """Record one ``store.stats()`` reading taken at ``now`` (seconds since the epoch).

        Returns the sample: ``t`` (seconds), ``revision``, ``write_rate`` (revisions per
        second since the previous sample; 0 for the first), ``log_bytes``,
        ``snapshot_bytes``, ``keys``.
        """
        now = time.time() if now is None else now
        revision = int(stats.get("revision") or 0)
        rate = 0.0
        with self._lock:
            last = self._last
            if last is not None and now > last["t"]:
                rate = max(0.0, (revision - last["revision"]) / (now - last["t"]))
            sample = {
                "t": round(now, 3),
                "revision": revision,
                "write_rate": round(rate, 2),
                "log_bytes": int(stats.get("log_bytes") or 0),
                "snapshot_bytes": int(stats.get("snapshot_bytes") or 0),
                "keys": int(stats.get("keys") or 0),
            }
            self._ring.append(sample)
            self._last = sample
            snapshot_revision = stats.get("last_snapshot_revision")
            if last is not None and snapshot_revision != self._snapshot_revision:
                self._snapshot_seen = now  # written since the previous sample
            # (at the first sample, a snapshot from before this server: its age is unknown)
            self._snapshot_revision = snapshot_revision
        return sample

    def samples(self) -> list[dict[str, Any]]:
        """Every sample in the ring, oldest first."""
        with self._lock:
            return list(self._ring)

    def latest(self) -> dict[str, Any] | None:
        """The newest sample, if any."""
        with self._lock:
            return self._last

    def snapshot_age(self, now: float | None = None) -> float | None:
        """Seconds since the newest snapshot, or None when not known (or there is none).

        From the store's own record of its snapshots when it keeps one, else from the time
        this sampler first saw the newest snapshot's revision. A store whose latest sample
        shows no snapshot has no age, whatever another store of this process wrote.
        """
        now = time.time() if now is None else now
        recorded = SNAPSHOT_SECONDS.read().last_observed
        with self._lock:
            if self._last is None or self._snapshot_revision is None:
                return None
            seen = self._snapshot_seen
        known = [t for t in (recorded, seen) if t is not None]
        return max(0.0, now - max(known)) if known else None
