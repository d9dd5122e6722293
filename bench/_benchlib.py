"""Shared helpers of the evstate benchmarks: data, timing, baselines, the figure registry.

Every figure the suite reports is a ratio of an evstate measurement against a baseline
measured in the same run, with the rounds of the two interleaved (the machines are shared
and noisy, so only same-run ratios are comparable across runs). Absolute figures are shown
too, because some targets are absolute.
"""

from __future__ import annotations

import glob
import os
import statistics
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import cbor2

SCOPE = "users"

# The largest save_interval_ms: no background snapshot during a benchmark that needs none.
NO_SNAPSHOTS_MS = 3_600_000

# The "typical value": {"name","email","createdAt","status","loginCount"}.
TYPICAL_VALUE: dict[str, Any] = {
    "name": "Alice Example",
    "email": "alice@example.com",
    "createdAt": "2024-01-15T10:30:00Z",
    "status": "active",
    "loginCount": 42,
}


def typical_value(i: int) -> dict[str, Any]:
    """A typical user value that differs per ``i`` (distinct strings, as real data has)."""
    return {
        "name": f"User {i}",
        "email": f"user{i}@example.com",
        "createdAt": (
            f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}Z"
        ),
        "status": "active" if i % 10 else "suspended",
        "loginCount": i % 5000,
    }


def key_name(i: int) -> str:
    return f"user_{i}"


def ops_per_s(ops: int, seconds: float) -> float:
    return ops / seconds if seconds > 0 else float("inf")


def median_rate(ops: int, durations: list[float]) -> float:
    """ops/s of the median round."""
    return ops_per_s(ops, statistics.median(durations))


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---- baselines ---------------------------------------------------------------------------

FRAME = struct.Struct("<II")  # docs/format.md section 3: length u32 | crc32 u32 | payload
SEGMENT_HEADER_SIZE = 24  # docs/format.md section 1


def segment_salt(header: bytes) -> int:
    """The record checksum salt of a segment from its header: bytes 16..19 (version 2+)."""
    version = int.from_bytes(header[4:6], "little")
    return int.from_bytes(header[16:20], "little") if version >= 2 else 0


def frame(payload: bytes) -> bytes:
    """Frame a payload the way evstate does (length, crc32 over length + payload)."""
    length = struct.pack("<I", len(payload))
    return length + struct.pack("<I", zlib.crc32(payload, zlib.crc32(length))) + payload


def log_bytes(directory: str) -> int:
    """Total size of the segment files of a store directory."""
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(directory, "*.log")))


def raw_replay(directory: str) -> tuple[int, dict[str, dict[str, bytes]]]:
    """The replay baseline: read every segment, check each frame's crc32, ``cbor2.loads``
    each record and apply it to a plain ``scope -> key -> encoded value`` dict.

    This is the physical floor of evstate's recovery (same files, same codec), without its
    validation of record shapes and revision order. Returns (events, table).
    """
    table: dict[str, dict[str, bytes]] = {}
    events = 0
    unpack = FRAME.unpack_from
    crc32 = zlib.crc32
    loads = cbor2.loads
    for path in sorted(glob.glob(os.path.join(directory, "*.log"))):
        with open(path, "rb") as f:
            data = f.read()
        buf = memoryview(data)
        salt = segment_salt(data[:SEGMENT_HEADER_SIZE])
        pos = SEGMENT_HEADER_SIZE
        end = len(data)
        while pos + 8 <= end:
            length, crc = unpack(buf, pos)
            body = pos + 8
            payload = buf[body : body + length]
            if length == 0 or crc32(payload, crc32(buf[pos : pos + 4], salt)) != crc:
                raise ValueError(f"bad record at {path}:{pos}")
            _, _rev, _ts, type_code, scope, key, _old, new = loads(payload)
            if type_code == 3:
                keys = table.get(scope)
                if keys is not None:
                    keys.pop(key, None)
            else:
                keys = table.get(scope)
                if keys is None:
                    table[scope] = {key: new}
                else:
                    keys[key] = new
            events += 1
            pos = body + length
    return events, table


# ---- figures -----------------------------------------------------------------------------


@dataclass
class Figure:
    """One row of the summary table."""

    fid: str  # sort key and label prefix, e.g. "1", "6a", "c1"
    name: str  # what was measured
    evstate: float
    baseline: float
    unit: str  # "ops/s", "events/s", "MiB", "ms"
    baseline_name: str
    target: str  # human-readable target, "" for context rows
    met: bool | None  # None: context row, no target
    higher_is_better: bool = True
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.evstate / self.baseline if self.baseline else float("inf")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d


def fmt_value(value: float, unit: str) -> str:
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    if unit == "bytes":
        return f"{value / 1e6:,.1f} MB"
    if unit == "ms":  # latencies and durations: lower is better
        if value >= 100:
            return f"{value:,.0f} ms"
        if value >= 1:
            return f"{value:.1f} ms"
        return f"{value * 1000:.0f} us"
    suffix = "/s"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M{suffix}"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k{suffix}"
    return f"{value:.0f}{suffix}"


def interleaved(
    benchmark: Any,
    evstate_round: Callable[[], float],
    baseline_round: Callable[[], object],
    *,
    rounds: int,
    warmup: int = 1,
) -> list[float]:
    """Run ``rounds`` rounds under pytest-benchmark, each a baseline round (pedantic's
    untimed ``setup``) followed by an evstate round (the timed target).

    Both round functions time themselves with ``perf_counter`` around their op loop (so
    the two sides are timed the same way, and the figures exist under
    ``--benchmark-disable`` too) and append to their own lists; ``evstate_round`` returns
    its duration. Returns the evstate durations with warm-up rounds dropped.
    """
    durations: list[float] = []

    def target() -> None:
        durations.append(evstate_round())

    def setup() -> None:
        baseline_round()

    benchmark.pedantic(target, setup=setup, rounds=rounds, warmup_rounds=warmup, iterations=1)
    return durations[warmup:] if len(durations) > warmup else durations


def drop_warmup(durations: list[float], warmup: int = 1) -> list[float]:
    return durations[warmup:] if len(durations) > warmup else durations


class Figures:
    """Where tests record their rows (a session fixture)."""

    def __init__(self, store: list[Figure]) -> None:
        self._store = store

    def add(self, figure: Figure) -> Figure:
        self._store.append(figure)
        return figure


class EventLog:
    """A store directory holding ``events`` set events (one per key), closed."""

    def __init__(self, path: str, events: int, build_seconds: float) -> None:
        self.path = path
        self.events = events
        self.build_seconds = build_seconds
        self.bytes = log_bytes(path)
