"""Snapshot, point-in-time and history figures (issue 3 section 6).

- 7a: reopen a store holding a 1M-key snapshot and a short tail, vs decoding that snapshot
  file alone (``evstate.backends.file.snapshot.read_snapshot``); target <= 1.5x.
- 7b: ``set`` latency (fsync=interval) while ``store.snapshot()`` of 1M keys runs in another
  thread, vs the same writer with no snapshot running; target p99 <= 50 ms.
- 7c, 7d: ``at()`` in the middle of a 1M-event history that has a snapshot every 100k events
  (on a snapshot, and 50k events past one), vs decoding one snapshot (context, no target).
- 7e, 7f: ``history()`` of one key (~10 events) in a 1M-event log: the first call (builds the
  index, from the key index files where they are) vs a raw scan of the same segments, and
  later calls vs raw ``pread`` + crc + ``cbor2.loads`` of that key's records; target <= 10 ms.
- 7g: the first ``history()`` of one key after reopening the store of the shared 1M-event
  log, vs a full ``events()`` scan of that log after the same reopen; target <= 0.05x
  (issue 16; the key index files of docs/format.md section 11).
- c4: ``history()`` of a hot key (1,000 events), later calls (context).
"""

from __future__ import annotations

import gc
import glob
import os
import shutil
import statistics
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import pytest
from _benchlib import (
    FRAME,
    NO_SNAPSHOTS_MS,
    SCOPE,
    SEGMENT_HEADER_SIZE,
    EventLog,
    Figure,
    Figures,
    drop_warmup,
    interleaved,
    key_name,
    raw_replay,
    segment_salt,
    typical_value,
)

import evstate
from evstate.backends.file.diskio import DiskIO
from evstate.backends.file.snapshot import SnapshotInfo, read_snapshot

LOG_EVENTS = int(os.environ.get("EVSTATE_BENCH_EVENTS", "1000000"))
MS = 1000.0


def _quantile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _snapshots(path: str) -> list[str]:
    return sorted(glob.glob(os.path.join(path, "*.snap")))


# ---- 7a: reopen with a 1M-key snapshot and a short tail ------------------------------------

TAIL = 1_000  # events after the snapshot ("a short tail")


@dataclass
class SnapStore:
    """A closed store directory: the 1M-key log, a snapshot of all of it, then TAIL events."""

    path: str
    snapshot: str
    snapshot_revision: int
    head: int
    keys: int


@pytest.fixture(scope="module")
def snap_store(event_log: EventLog, tmp_path_factory: pytest.TempPathFactory) -> SnapStore:
    path = str(tmp_path_factory.mktemp("snap1m") / "store")
    shutil.copytree(event_log.path, path, ignore=shutil.ignore_patterns("LOCK"))
    n = event_log.events
    with evstate.open(path, fsync="never", save_interval_ms=NO_SNAPSHOTS_MS) as store:
        snap_revision = store.snapshot()
        for i in range(TAIL):  # overwrite spread-out keys: the tail changes existing state
            store.set(SCOPE, key_name(i * 997 % n), typical_value(n + i))
        head = store.revision
    snaps = _snapshots(path)
    assert snap_revision == n and len(snaps) == 1, (snap_revision, snaps)
    gc.collect()
    return SnapStore(path, snaps[0], snap_revision, head, n)


REOPEN_ROUNDS = 5


def test_reopen_snapshot_and_tail(benchmark: Any, figures: Figures, snap_store: SnapStore) -> None:
    io = DiskIO()
    decode_times: list[float] = []
    heads: list[int] = []

    def evstate_round() -> float:
        gc.collect()
        t0 = time.perf_counter()
        store = evstate.open(snap_store.path, save_interval_ms=NO_SNAPSHOTS_MS)
        elapsed = time.perf_counter() - t0
        heads.append(store.revision)
        store.close()  # not timed: the figure is the time until the store serves
        return elapsed

    def decode_round() -> None:
        gc.collect()
        t0 = time.perf_counter()
        snap = read_snapshot(SnapshotInfo(snap_store.snapshot_revision, snap_store.snapshot), io)
        decode_times.append(time.perf_counter() - t0)
        assert snap.revision == snap_store.snapshot_revision

    ev_times = interleaved(benchmark, evstate_round, decode_round, rounds=REOPEN_ROUNDS)
    assert set(heads) == {snap_store.head}, heads
    ev = statistics.median(ev_times) * MS
    base = statistics.median(drop_warmup(decode_times)) * MS
    ratios = [e / d for e, d in zip(ev_times, drop_warmup(decode_times), strict=False)]
    fig = figures.add(
        Figure(
            "7a",
            f"reopen, {snap_store.keys / 1e6:g}M-key snapshot + {TAIL}-event tail",
            ev,
            base,
            "ms",
            "read_snapshot() of that file",
            "<=1.5x",
            ev / base <= 1.5,
            higher_is_better=False,
            detail={
                "snapshot_mib": os.path.getsize(snap_store.snapshot) / 2**20,
                "tail_events": TAIL,
                "evstate_s": sorted(ev_times),
                "decode_s": sorted(drop_warmup(decode_times)),
                "round_ratios": sorted(ratios),
            },
        )
    )
    benchmark.extra_info.update(fig.detail, ratio=fig.ratio)


# ---- 7b: write latency while a 1M-key snapshot is taken ----------------------------------

SNAPSHOT_WRITE_ROUNDS = 3
VALUES = [typical_value(i) for i in range(1_000)]


def _copy_snapshot_and_tail(src: SnapStore, dst: str) -> None:
    """What retention leaves of ``src``: its snapshot and the segments after it."""
    os.makedirs(dst)
    shutil.copy2(src.snapshot, dst)
    for seg in sorted(glob.glob(os.path.join(src.path, "*.log"))):
        if int(os.path.basename(seg).split(".")[0]) > src.snapshot_revision:
            shutil.copy2(seg, dst)


def test_write_latency_during_snapshot(
    benchmark: Any, figures: Figures, snap_store: SnapStore, tmp_path: Path
) -> None:
    """One writer thread runs ``set`` back to back (overwriting the 1M keys) and times each
    call; an evstate round runs it while another thread takes ``store.snapshot()``, the
    interleaved baseline round runs it for as long with no snapshot."""
    path = str(tmp_path / "store")
    _copy_snapshot_and_tail(snap_store, path)
    store = evstate.open(path, fsync="interval", save_interval_ms=NO_SNAPSHOTS_MS)
    assert store.revision == snap_store.head
    n = snap_store.keys
    keys = [key_name(i) for i in range(0, n, 7)]  # spread over the table
    pos = [0]
    during: list[list[float]] = []
    idle: list[list[float]] = []
    snap_s: list[float] = []
    last_snapshot = [snap_store.snapshot_revision]

    def write_while(running: threading.Event, deadline: float | None) -> list[float]:
        lat: list[float] = []
        append, set_, pc = lat.append, store.set, time.perf_counter
        i = pos[0]
        while running.is_set() and (deadline is None or pc() < deadline):
            for _ in range(100):
                k = keys[i % len(keys)]
                t0 = pc()
                set_(SCOPE, k, VALUES[i % 1000])
                append(pc() - t0)
                i += 1
        pos[0] = i
        return lat

    def evstate_round() -> float:
        running = threading.Event()
        running.set()
        result: dict[str, Any] = {}

        def snap() -> None:
            t0 = time.perf_counter()
            try:
                result["revision"] = store.snapshot()
            except BaseException as exc:  # reported below
                result["error"] = exc
            result["s"] = time.perf_counter() - t0
            running.clear()

        gc.collect()
        thread = threading.Thread(target=snap, name="bench-snapshot")
        before = store.revision
        thread.start()
        during.append(write_while(running, None))
        thread.join()
        assert "error" not in result, result
        assert result["revision"] >= before > last_snapshot[0], (result, before)
        last_snapshot[0] = result["revision"]
        snap_s.append(result["s"])
        return float(result["s"])

    def baseline_round() -> None:
        running = threading.Event()
        running.set()
        window = statistics.median(snap_s) if snap_s else 2.0
        gc.collect()
        idle.append(write_while(running, time.perf_counter() + window))

    try:
        interleaved(
            benchmark, evstate_round, baseline_round, rounds=SNAPSHOT_WRITE_ROUNDS, warmup=0
        )
    finally:
        store.close()
    lat = [x for r in during for x in r]
    base = [x for r in idle for x in r]
    p99, base_p99 = _quantile(lat, 0.99) * MS, _quantile(base, 0.99) * MS
    fig = figures.add(
        Figure(
            "7b",
            f"set p99 during a {n / 1e6:g}M-key snapshot, fsync=interval",
            p99,
            base_p99,
            "ms",
            "set p99, no snapshot running",
            "p99 <=50 ms",
            p99 <= 50.0,
            higher_is_better=False,
            detail={
                "during_p50_ms": _quantile(lat, 0.5) * MS,
                "during_p99_ms": p99,
                "during_p999_ms": _quantile(lat, 0.999) * MS,
                "during_max_ms": max(lat) * MS,
                "during_over_50ms": sum(1 for x in lat if x > 0.05),
                "during_sets": len(lat),
                "baseline_p50_ms": _quantile(base, 0.5) * MS,
                "baseline_p99_ms": base_p99,
                "baseline_max_ms": max(base) * MS,
                "baseline_sets": len(base),
                "round_p99_ms": [_quantile(r, 0.99) * MS for r in during],
                "round_max_ms": [max(r) * MS for r in during],
                "baseline_round_p99_ms": [_quantile(r, 0.99) * MS for r in idle],
                "snapshot_s": snap_s,
                "writes_per_s_during": len(lat) / sum(snap_s),
                "writes_per_s_baseline": len(base) / sum(snap_s),
            },
        )
    )
    benchmark.extra_info.update(fig.detail, ratio=fig.ratio)


# ---- the 1M-event history with periodic snapshots (7c-7f, c4) ----------------------------

HOT_KEY = "hot_user"
HOT_EVERY = 1_000  # every 1000th event writes the hot key


@dataclass
class HistoryLog:
    """A closed store: LOG_EVENTS sets over LOG_EVENTS/10 keys (each ~10 events) plus a hot
    key written every HOT_EVERY events, with a snapshot every LOG_EVENTS/10 events."""

    path: str
    events: int
    key_space: int
    snap_every: int
    build_seconds: float
    snapshots: dict[int, str] = field(default_factory=dict)

    def key_of(self, i: int) -> str:
        """The key the ``i``-th event (0-based) writes."""
        return HOT_KEY if i % HOT_EVERY == HOT_EVERY - 1 else key_name(i % self.key_space)


@pytest.fixture(scope="module")
def history_log(tmp_path_factory: pytest.TempPathFactory) -> HistoryLog:
    path = str(tmp_path_factory.mktemp("hist1m") / "store")
    n = LOG_EVENTS
    log = HistoryLog(path, n, max(n // 10, 1), max(n // 10, 1), 0.0)
    t0 = time.perf_counter()
    store = evstate.open(path, fsync="never", save_interval_ms=NO_SNAPSHOTS_MS)
    try:
        set_, key_of = store.set, log.key_of
        for i in range(n):
            set_(SCOPE, key_of(i), typical_value(i))
            if (i + 1) % log.snap_every == 0:
                store.snapshot()  # what periodic snapshots leave behind, at known revisions
    finally:
        store.close()
    log.build_seconds = time.perf_counter() - t0
    for snap in _snapshots(path):
        log.snapshots[int(os.path.basename(snap).split(".")[0])] = snap
    assert sorted(log.snapshots) == list(range(log.snap_every, n + 1, log.snap_every))
    gc.collect()
    return log


# ---- 7c, 7d: at() in the middle ----------------------------------------------------------

AT_ROUNDS = 5


@pytest.mark.parametrize("past_snapshot", [False, True], ids=["on-snapshot", "between"])
def test_at_middle(
    benchmark: Any, figures: Figures, history_log: HistoryLog, past_snapshot: bool
) -> None:
    io = DiskIO()
    mid = history_log.events // 2
    base_rev = max(r for r in history_log.snapshots if r <= mid)
    target = base_rev + (history_log.snap_every // 2 if past_snapshot else 0)
    snap_path = history_log.snapshots[base_rev]
    store = evstate.open(history_log.path, fsync="never", save_interval_ms=NO_SNAPSHOTS_MS)
    decode_times: list[float] = []
    probe = key_name(12_345 % history_log.key_space)

    def evstate_round() -> float:
        gc.collect()
        t0 = time.perf_counter()
        view = store.at(target)
        elapsed = time.perf_counter() - t0
        assert view.revision == target
        view.get(SCOPE, probe)
        return elapsed

    def decode_round() -> None:
        gc.collect()
        t0 = time.perf_counter()
        read_snapshot(SnapshotInfo(base_rev, snap_path), io)
        decode_times.append(time.perf_counter() - t0)

    try:
        ev_times = interleaved(benchmark, evstate_round, decode_round, rounds=AT_ROUNDS)
    finally:
        store.close()
    ev = statistics.median(ev_times) * MS
    base = statistics.median(drop_warmup(decode_times)) * MS
    replayed = target - base_rev
    fid = "7d" if past_snapshot else "7c"
    where = f"{replayed // 1000}k events past a snapshot" if replayed else "on a snapshot"
    fig = figures.add(
        Figure(
            fid,
            f"at(), revision {target:,} of {history_log.events / 1e6:g}M ({where})",
            ev,
            base,
            "ms",
            f"read_snapshot(), {history_log.key_space // 1000}k keys",
            "",
            None,
            higher_is_better=False,
            detail={
                "target_revision": target,
                "snapshot_revision": base_rev,
                "replayed_events": replayed,
                "snapshot_keys": history_log.key_space + 1,
                "evstate_s": sorted(ev_times),
                "decode_s": sorted(drop_warmup(decode_times)),
            },
        )
    )
    benchmark.extra_info.update(fig.detail, ratio=fig.ratio)


# ---- 7e, 7f, c4: history() of one key ----------------------------------------------------

HISTORY_ROUNDS = 3
SAMPLE_KEYS = 50  # later calls per round: distinct typical keys


def _raw_offsets(directory: str, wanted: set[str]) -> dict[str, list[tuple[str, int]]]:
    """(segment path, offset) of every record of the ``wanted`` keys (a raw scan)."""
    found: dict[str, list[tuple[str, int]]] = {k: [] for k in wanted}
    loads, unpack = cbor2.loads, FRAME.unpack_from
    for path in sorted(glob.glob(os.path.join(directory, "*.log"))):
        with open(path, "rb") as f:
            data = f.read()
        buf = memoryview(data)
        pos = SEGMENT_HEADER_SIZE
        while pos + 8 <= len(data):
            length, _crc = unpack(buf, pos)
            key = loads(buf[pos + 8 : pos + 8 + length])[5]
            if key in found:
                found[key].append((path, pos))
            pos += 8 + length
    return found


_SALTS: dict[str, int] = {}  # segment path -> its checksum salt (evstate caches it too)


def _salt(path: str, fd: int) -> int:
    """The record checksum salt of a segment: header bytes 16..19 (format version 2)."""
    salt = _SALTS.get(path)
    if salt is None:
        salt = _SALTS[path] = segment_salt(os.pread(fd, SEGMENT_HEADER_SIZE, 0))
    return salt


def _raw_read(locations: list[tuple[str, int]]) -> list[Any]:
    """The history floor: per record, open + pread + crc32 check + ``cbor2.loads``."""
    out = []
    for path, offset in locations:
        with open(path, "rb") as f:
            fd = f.fileno()
            length, crc = FRAME.unpack(os.pread(fd, 8, offset))
            payload = os.pread(fd, length, offset + 8)
            salt = _salt(path, fd)
        if zlib.crc32(payload, zlib.crc32(length.to_bytes(4, "little"), salt)) != crc:
            raise ValueError(f"bad record at {path}:{offset}")
        out.append(cbor2.loads(payload))
    return out


def test_history_one_key(benchmark: Any, figures: Figures, history_log: HistoryLog) -> None:
    """Each round opens the store afresh (untimed; the newest snapshot covers the whole log),
    then times the first ``history()`` call, which builds the index, and SAMPLE_KEYS later
    calls on other keys plus HOT_KEY. Baselines, interleaved: a raw scan of the segments
    (frame + crc + ``cbor2.loads``, as figure 5's), and raw reads of the same keys'
    records at offsets found beforehand."""
    space = history_log.key_space
    sample = [key_name((i * 7_919) % space) for i in range(SAMPLE_KEYS + 1)]
    first_key, later_keys = sample[0], sample[1:]
    offsets = _raw_offsets(history_log.path, {*sample, HOT_KEY})
    first_times: list[float] = []
    later: list[list[float]] = []
    hot: list[float] = []
    scan_times: list[float] = []
    raw_later: list[list[float]] = []
    raw_hot: list[float] = []
    counts: dict[str, int] = {}

    def evstate_round() -> float:
        store = evstate.open(history_log.path, fsync="never", save_interval_ms=NO_SNAPSHOTS_MS)
        try:
            assert not store.stats()["index_built"]
            gc.collect()
            t0 = time.perf_counter()
            events = store.history(SCOPE, first_key)
            first = time.perf_counter() - t0
            assert len(events) == len(offsets[first_key])
            times = []
            for k in later_keys:
                t0 = time.perf_counter()
                events = store.history(SCOPE, k)
                times.append(time.perf_counter() - t0)
                counts[k] = len(events)
            later.append(times)
            t0 = time.perf_counter()
            events = store.history(SCOPE, HOT_KEY)
            hot.append(time.perf_counter() - t0)
            counts[HOT_KEY] = len(events)
        finally:
            store.close()
        first_times.append(first)
        return first

    def baseline_round() -> None:
        gc.collect()
        t0 = time.perf_counter()
        events, _table = raw_replay(history_log.path)
        scan_times.append(time.perf_counter() - t0)
        del _table
        assert events == history_log.events
        times = []
        for k in later_keys:
            t0 = time.perf_counter()
            _raw_read(offsets[k])
            times.append(time.perf_counter() - t0)
        raw_later.append(times)
        t0 = time.perf_counter()
        _raw_read(offsets[HOT_KEY])
        raw_hot.append(time.perf_counter() - t0)

    interleaved(benchmark, evstate_round, baseline_round, rounds=HISTORY_ROUNDS, warmup=0)
    assert all(counts[k] == len(offsets[k]) for k in counts), "history() missed events"
    per_key = statistics.median(len(offsets[k]) for k in later_keys)
    all_later = [x for r in later for x in r]
    all_raw = [x for r in raw_later for x in r]
    first_ms = statistics.median(first_times) * MS
    later_ms = statistics.median(all_later) * MS
    n = history_log.events
    figures.add(
        Figure(
            "7e",
            f"history(), 1 key, {n / 1e6:g}M-event log, first call (builds index)",
            first_ms,
            statistics.median(scan_times) * MS,
            "ms",
            "raw scan of the segments",
            "<=10 ms",
            first_ms <= 10.0,
            higher_is_better=False,
            detail={"evstate_s": sorted(first_times), "scan_s": sorted(scan_times)},
        )
    )
    figures.add(
        Figure(
            "7f",
            f"history(), 1 key ({per_key:g} events), {n / 1e6:g}M-event log, later calls",
            later_ms,
            statistics.median(all_raw) * MS,
            "ms",
            "raw pread+crc+cbor2.loads of its records",
            "<=10 ms",
            later_ms <= 10.0,
            higher_is_better=False,
            detail={
                "calls": len(all_later),
                "p99_ms": _quantile(all_later, 0.99) * MS,
                "max_ms": max(all_later) * MS,
                "raw_max_ms": max(all_raw) * MS,
                "events_per_key": per_key,
            },
        )
    )
    hot_events = len(offsets[HOT_KEY])
    figures.add(
        Figure(
            "c4",
            f"history(), hot key ({hot_events} events), later calls (context)",
            statistics.median(hot) * MS,
            statistics.median(raw_hot) * MS,
            "ms",
            "raw pread+crc+cbor2.loads of its records",
            "",
            None,
            higher_is_better=False,
            detail={"evstate_s": sorted(hot), "raw_s": sorted(raw_hot)},
        )
    )
    benchmark.extra_info.update(
        first_call_ms=first_ms, later_call_ms=later_ms, build_s=history_log.build_seconds
    )


# ---- 7g: the first history() after a reopen, vs a full events() scan ----------------------

COLD_ROUNDS = 3


def test_first_history_after_reopen(benchmark: Any, figures: Figures, event_log: EventLog) -> None:
    """Each evstate round opens the 1M-event store afresh (untimed: figure 5 times opening)
    and times its first ``history()`` of one key, which builds the history index (from the
    key index files a clean close leaves) and reads that key's record. The interleaved
    baseline round opens it the same way and times a full ``events()`` scan. Lower is
    better."""
    key = key_name(event_log.events // 2)
    first_times: list[float] = []
    scan_times: list[float] = []
    counts: set[int] = set()

    def evstate_round() -> float:
        store = evstate.open(event_log.path, save_interval_ms=NO_SNAPSHOTS_MS)
        try:
            assert not store.stats()["index_built"]
            gc.collect()
            t0 = time.perf_counter()
            events = store.history(SCOPE, key)
            elapsed = time.perf_counter() - t0
        finally:
            store.close()
        assert [e.new_value for e in events] == [typical_value(event_log.events // 2)]
        first_times.append(elapsed)
        return elapsed

    def baseline_round() -> None:
        store = evstate.open(event_log.path, save_interval_ms=NO_SNAPSHOTS_MS)
        try:
            gc.collect()
            t0 = time.perf_counter()
            n = sum(1 for _ in store.events())
            scan_times.append(time.perf_counter() - t0)
        finally:
            store.close()
        counts.add(n)

    interleaved(benchmark, evstate_round, baseline_round, rounds=COLD_ROUNDS, warmup=0)
    assert counts == {event_log.events}, counts
    first_ms = statistics.median(first_times) * MS
    scan_ms = statistics.median(scan_times) * MS
    index_bytes = sum(os.path.getsize(p) for p in glob.glob(os.path.join(event_log.path, "*.keys")))
    fig = figures.add(
        Figure(
            "7g",
            f"history(), 1 key, first call after reopen, {event_log.events / 1e6:g}M-event log",
            first_ms,
            scan_ms,
            "ms",
            "events() scan of that log",
            "<=0.05x",
            first_ms <= 0.05 * scan_ms,
            higher_is_better=False,
            detail={
                "evstate_s": sorted(first_times),
                "scan_s": sorted(scan_times),
                "segments": len(glob.glob(os.path.join(event_log.path, "*.log"))),
                "log_mib": event_log.bytes / 2**20,
                "key_index_mib": index_bytes / 2**20,
            },
        )
    )
    benchmark.extra_info.update(fig.detail, ratio=fig.ratio)
