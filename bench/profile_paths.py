"""Profile the hot paths behind the benchmark figures (not collected by pytest).

    .venv/bin/python bench/profile_paths.py [set|get|group|reopen|all]

``set``: cProfile of ``set`` under fsync=interval; ``get``: cProfile of ``get`` on 100k keys;
``group``: 16 threads under fsync=always, with every ``fdatasync`` timed (how busy the disk
was, records per sync) and a per-thread cProfile, next to a minimal raw group commit in
Python (write under a lock, leader fsyncs, followers wait) on the same disk; ``reopen``:
cProfile of opening a 300k-event log, next to the raw replay baseline.
Prints the top functions by own time; per-op costs of the pieces come from ``timeit``.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import random
import sys
import tempfile
import threading
import time
import timeit
from collections.abc import Callable
from typing import Any

import cbor2
from _benchlib import NO_SNAPSHOTS_MS, SCOPE, frame, key_name, raw_replay, typical_value

import evstate
from evstate.backends.file.segment import frame_record
from evstate.events import EventRecord, encode_record
from evstate.values import decode_value, encode_value, validate_value


def top(prof: cProfile.Profile | pstats.Stats, n: int = 18, sort: str = "tottime") -> str:
    out = io.StringIO()
    stats = prof if isinstance(prof, pstats.Stats) else pstats.Stats(prof, stream=out)
    stats.stream = out  # type: ignore[attr-defined]
    stats.strip_dirs().sort_stats(sort).print_stats(n)
    return "\n".join(line for line in out.getvalue().splitlines() if line.strip())


def per_op(stmt: Callable[[], object], number: int = 100_000) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=5)) / number * 1e6


def profile_set(tmp: str) -> None:
    n = 50_000
    keys = [key_name(i) for i in range(n)]
    values = [typical_value(i) for i in range(1000)]
    store = evstate.open(os.path.join(tmp, "set"), fsync="interval")
    for i in range(n):  # create the keys; the profiled pass overwrites (old + new values)
        store.set(SCOPE, keys[i], values[i % 1000])
    t0 = time.perf_counter()
    for i in range(n):
        store.set(SCOPE, keys[i], values[i % 1000])
    plain = n / (time.perf_counter() - t0)
    prof = cProfile.Profile()
    prof.enable()
    for i in range(n):
        store.set(SCOPE, keys[i], values[i % 1000])
    prof.disable()
    store.close()
    v = values[7]
    b = encode_value(v)
    rec = EventRecord(1, 2, 2, SCOPE, "user_7", b, b)
    payload = encode_record(rec)
    fd = os.open(os.path.join(tmp, "w.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    mem = evstate.open()
    print(f"== set, fsync=interval: {plain:,.0f} ops/s unprofiled ({1e6 / plain:.2f} us/op)")
    print("pieces (us/op):")
    for name, fn in [
        ("validate_value", lambda: validate_value(v)),
        ("encode_value (cbor2.dumps)", lambda: encode_value(v)),
        ("encode_record (cbor2.dumps of the event)", lambda: encode_record(rec)),
        ("frame_record (struct + 2x crc32)", lambda: frame_record(payload)),
        ("os.write of one framed record", lambda: os.write(fd, frame(payload))),
        ("decode_value (x2 per set: old + new)", lambda: decode_value(b)),
        ("in-memory Store.set (no log)", lambda: mem.set(SCOPE, "k", v)),
    ]:
        print(f"  {name:45s} {per_op(fn):6.2f}")
    os.close(fd)
    print(top(prof))


def profile_get(tmp: str) -> None:
    n = 100_000
    store = evstate.open(os.path.join(tmp, "get"), fsync="never")
    for i in range(n):
        store.set(SCOPE, key_name(i), typical_value(i))
    order = [key_name(i) for i in range(n)]
    random.Random(7).shuffle(order)
    t0 = time.perf_counter()
    for k in order:
        store.get(SCOPE, k)
    plain = n / (time.perf_counter() - t0)
    prof = cProfile.Profile()
    prof.enable()
    for k in order:
        store.get(SCOPE, k)
    prof.disable()
    b = encode_value(typical_value(7))
    print(f"== get: {plain:,.0f} ops/s unprofiled ({1e6 / plain:.2f} us/op)")
    print("pieces (us/op):")
    for name, fn in [
        ("cbor2.loads(value)", lambda: cbor2.loads(b)),
        ("decode_value(value)", lambda: decode_value(b)),
        ("Store.get, one hot key", lambda: store.get(SCOPE, "user_7")),
    ]:
        print(f"  {name:45s} {per_op(fn):6.2f}")
    store.close()
    print(top(prof))


class _TimedSync:
    def __init__(self, real: Callable[[int], None]) -> None:
        self.real = real
        self.spans: list[tuple[float, float]] = []

    def __call__(self, fd: int) -> None:
        t0 = time.perf_counter()
        self.real(fd)
        self.spans.append((t0, time.perf_counter()))


def _run_threads(n_threads: int, work: Callable[[int], None]) -> float:
    barrier = threading.Barrier(n_threads + 1)

    def run(t: int) -> None:
        barrier.wait()
        work(t)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    t0 = time.perf_counter()
    barrier.wait()
    for th in threads:
        th.join()
    return time.perf_counter() - t0


def _report(label: str, ops: int, elapsed: float, spans: list[tuple[float, float]]) -> None:
    busy = sum(b - a for a, b in spans)
    syncs = len(spans)
    mean = busy / syncs * 1e6 if syncs else 0.0
    print(
        f"  {label:34s} {ops / elapsed:8,.0f} ops/s  {syncs:5d} fdatasyncs  "
        f"{ops / max(syncs, 1):5.1f} rec/sync  mean sync {mean:5.0f} us  "
        f"disk busy {busy / elapsed:4.0%}"
    )


class RawGroupCommit:
    """A minimal group commit: append under a lock; a leader fsyncs, followers wait."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.lock = threading.Lock()
        self.cond = threading.Condition()
        self.written = 0
        self.durable = 0
        self.syncing = False

    def write(self, record: bytes) -> None:
        with self.lock:
            os.write(self.fd, frame(record))
            self.written += 1
            mine = self.written
        with self.cond:
            while self.durable < mine:
                if not self.syncing:
                    self.syncing = True
                    break
                self.cond.wait()
            else:
                return
        target = self.written
        os.fdatasync(self.fd)
        with self.cond:
            self.syncing = False
            self.durable = max(self.durable, target)
            self.cond.notify_all()


def profile_group(tmp: str) -> None:
    threads, per = 16, 500
    values = [typical_value(i) for i in range(per)]
    record = encode_record(EventRecord(1, 2, 2, SCOPE, "t1_1", *(2 * [encode_value(values[0])])))
    timer = _TimedSync(os.fdatasync)
    os.fdatasync = timer  # type: ignore[assignment]
    try:
        print(f"== fsync=always, {threads} threads x {per} sets (and 1 thread x {per})")
        store = evstate.open(os.path.join(tmp, "group"), fsync="always")
        profiles: list[cProfile.Profile] = []

        def ev_work(t: int, profile: bool = False) -> None:
            prof = cProfile.Profile() if profile else None
            if prof:
                prof.enable()
            for j in range(per):
                store.set(SCOPE, f"t{t}_{j}", values[j])
            if prof:
                prof.disable()
                profiles.append(prof)

        for n in (1, threads):
            timer.spans.clear()
            elapsed = _run_threads(n, ev_work)
            _report(f"evstate, {n} thread(s)", n * per, elapsed, timer.spans)
        raw = RawGroupCommit(os.path.join(tmp, "raw-group.log"))
        for n in (1, threads):
            timer.spans.clear()
            elapsed = _run_threads(n, lambda t: [raw.write(record) for _ in range(per)])
            _report(f"raw Python group commit, {n} thr", n * per, elapsed, timer.spans)
        timer.spans.clear()
        _run_threads(threads, lambda t: ev_work(t, profile=True))
        store.close()
    finally:
        os.fdatasync = timer.real
    merged = pstats.Stats(profiles[0])
    for prof in profiles[1:]:
        merged.add(prof)
    print("per-thread cProfile, merged (cumulative time includes waiting):")
    print(top(merged, sort="tottime"))


def profile_reopen(tmp: str) -> None:
    n = 300_000
    path = os.path.join(tmp, "reopen")
    with evstate.open(path, fsync="never", save_interval_ms=NO_SNAPSHOTS_MS) as store:
        for i in range(n):
            store.set(SCOPE, key_name(i), typical_value(i))
    t0 = time.perf_counter()
    raw_replay(path)
    raw = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    evstate.open(path, save_interval_ms=NO_SNAPSHOTS_MS).close()
    plain = n / (time.perf_counter() - t0)
    prof = cProfile.Profile()
    prof.enable()
    evstate.open(path, save_interval_ms=NO_SNAPSHOTS_MS).close()
    prof.disable()
    print(f"== reopen, {n:,} events: {plain:,.0f} events/s unprofiled; raw replay {raw:,.0f}/s")
    print(top(prof))


def main(argv: list[str]) -> None:
    which = argv[0] if argv else "all"
    runs: dict[str, Callable[[str], Any]] = {
        "set": profile_set,
        "get": profile_get,
        "group": profile_group,
        "reopen": profile_reopen,
    }
    with tempfile.TemporaryDirectory(prefix="evstate-profile-") as tmp:
        for name, fn in runs.items():
            if which in (name, "all"):
                fn(tmp)
                print()


if __name__ == "__main__":
    main(sys.argv[1:])
