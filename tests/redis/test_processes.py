"""Several evstate processes sharing one Redis: exact updates, triggers across the fleet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from evstate.backends.redis.store import RedisStore

ROOT = Path(__file__).resolve().parents[2]
Open = Callable[..., RedisStore]
EVENTS = 400


def spawn(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.redis.worker", url, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def expect_line(proc: subprocess.Popen[str], line: str, timeout: float = 30) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = proc.stdout.readline().strip()
        if got == line:
            return
        if proc.poll() is not None:
            break
    raise AssertionError(f"worker {proc.pid} did not print {line!r}")


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def test_concurrent_increments_from_two_processes_are_exact(
    open_store: Open, redis_url: str, procs: list[subprocess.Popen[str]]
) -> None:
    store = open_store()
    procs += [spawn(redis_url, "increment", "1500") for _ in range(2)]
    for proc in procs:
        expect_line(proc, "done", timeout=90)
        assert proc.wait(timeout=10) == 0
    assert store.get("counters", "c") == {"n": 3000}
    assert store.revision == 3000
    assert [e.new_value["n"] for e in store.events()] == list(range(1, 3001))
    assert store.verify() == []


def _holder_pid(store: RedisStore) -> int | None:
    holder = store.trigger_fleet_status().get("t", {}).get("holder")
    return int(holder.split(":")[1]) if holder else None


def _seen(files: list[Path]) -> dict[Path, list[int]]:
    return {f: [int(x) for x in f.read_text().split()] if f.exists() else [] for f in files}


def _count(store: RedisStore) -> int:
    value = store.get("out", "count")
    return 0 if value is None else int(value["n"])


def _run_fleet(
    store: RedisStore,
    url: str,
    tmp_path: Path,
    procs: list[subprocess.Popen[str]],
    kill: signal.Signals,
) -> tuple[dict[Path, list[int]], int]:
    files = [tmp_path / f"seen-{n}.txt" for n in range(2)]
    for f in files:
        procs.append(spawn(url, "trigger", "t", str(f), "2"))
    for proc in procs:
        expect_line(proc, "ready")
    for i in range(EVENTS):
        store.set("in", f"k{i % 20}", i)
    wait_until(lambda: _count(store) >= EVENTS // 3, 30, "a third of the events")
    pid = _holder_pid(store)
    assert pid in {p.pid for p in procs}
    os.kill(pid, kill)
    wait_until(lambda: _count(store) >= EVENTS, 60, "every event")
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return _seen(files), pid


def test_trigger_across_two_processes_exactly_once_with_a_clean_handover(
    open_store: Open, redis_url: str, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    store = open_store()
    seen, _ = _run_fleet(store, redis_url, tmp_path, procs, signal.SIGTERM)
    both = [r for revisions in seen.values() for r in revisions]
    expected = [e.revision for e in store.events(scope="in")]  # handler writes are events too
    assert len(expected) == EVENTS
    assert sorted(both) == expected  # every event exactly once
    assert all(revisions for revisions in seen.values())  # both processes delivered
    for revisions in seen.values():
        assert revisions == sorted(revisions)  # in order within each process
    assert _count(store) == EVENTS
    assert store.trigger_status()["t"]["cursor"] >= max(
        e.revision for e in store.events(scope="in")
    )
    assert store.verify() == []


def test_trigger_survives_sigkill_of_the_delivering_process(
    open_store: Open, redis_url: str, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    store = open_store()
    seen, killed = _run_fleet(store, redis_url, tmp_path, procs, signal.SIGKILL)
    both = Counter(r for revisions in seen.values() for r in revisions)
    assert set(both) == {e.revision for e in store.events(scope="in")}  # each at least once
    duplicates = sum(n - 1 for n in both.values())
    print(f"redeliveries after one SIGKILL: {duplicates}")
    assert duplicates <= 5, f"{duplicates} redeliveries after one SIGKILL"
    assert _count(store) == EVENTS  # writes through event.store: exactly once
    survivor = [f for f, revisions in seen.items() if revisions and str(killed) not in f.name]
    assert survivor
    assert store.trigger_status()["t"]["cursor"] >= max(
        e.revision for e in store.events(scope="in")
    )
    assert store.verify() == []
