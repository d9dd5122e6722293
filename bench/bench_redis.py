"""Redis adapter figures (issue 6 section 5): write throughput of 1, 2 and 4 evstate processes
sharing one Redis, against redis-py doing plain ``HSET``s of the same JSON (the floor of what
the network and Redis allow), measured in the same run with interleaved rounds.

r1, r2, r4: ``RedisStore.set`` of a typical user value (one Lua script: HGET + HSET + the
revision + XADD + the retry-dedup key) vs ``HSET state:users <key> <json>``. Context rows.
c-hot: ``update`` (increment) of ONE key from 4 processes vs ``HINCRBY`` of one field from 4
processes (issue 16 target: >= 0.5x). The update runs inside Redis (the ``UPDATE`` function,
evstate/backends/redis/update_script.py: ops applied, hash + stream entry + revision written
in one step), so concurrent updates never retry.
c-hot-py: the same update forced onto the Python path (read, apply, compare-and-set, retried
on conflict; what every update did before the fast path), against the same baseline. Context.

Redis runs with ``appendonly yes`` and ``appendfsync everysec`` (the usual production
setting). Each process is a separate interpreter; they start together after a barrier and
the aggregate rate is total ops / (last end - first start).

Run: ``python3 tools/dev.py bench -k redis`` (``EVSTATE_REDIS_SERVER`` picks the binary).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _benchlib import SCOPE, Figure, Figures, interleaved, key_name, typical_value

OPS = int(os.environ.get("EVSTATE_BENCH_REDIS_OPS", "4000"))  # per process per round
ROUNDS = 3
KEYS = 10_000
HERE = Path(__file__).resolve()


# ---- a redis-server for the run ----------------------------------------------------------


def _binary() -> str | None:
    return (
        os.environ.get("EVSTATE_REDIS_SERVER")
        or shutil.which("redis-server")
        or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    )


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    binary = _binary()
    if binary is None:
        pytest.skip("redis-server not found")
    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    directory = tmp_path_factory.mktemp("bench-redis")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(directory)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 15
    while True:
        try:
            with redis.Redis.from_url(url) as client:
                client.ping()
                break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield url
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


# ---- the worker processes ----------------------------------------------------------------


def _worker(url: str, mode: str, ops: int, offset: int) -> None:
    """Run in a child: warm up, print "ready", wait for "go", run ``ops``, print timings."""
    import redis

    from evstate import UpdateOp
    from evstate.backends.redis.store import open_redis

    values = [typical_value(i) for i in range(1000)]
    keys = [key_name(offset + i) for i in range(KEYS)]
    if mode == "hot-py":  # the fast path ruled out: every update takes the Python path
        import evstate.backends.redis.writes as writes

        writes.plan_update = lambda ops: None  # type: ignore[assignment]
    store = open_redis(url) if mode in ("evstate", "hot", "hot-py") else None
    client = redis.Redis.from_url(url)
    state = f"state:{SCOPE}"

    def one(i: int) -> None:
        if mode == "evstate":
            assert store is not None
            store.set(SCOPE, keys[i % KEYS], values[i % 1000])
        elif mode == "hset":
            text = json.dumps(values[i % 1000], separators=(",", ":"), ensure_ascii=False)
            client.hset(state, keys[i % KEYS], text)
        elif mode in ("hot", "hot-py"):
            assert store is not None
            store.update("bench", "hot", [UpdateOp.increment("n", 1)])
        else:  # hincrby
            client.hincrby("bench:hot", "n", 1)

    for i in range(200):
        one(i)
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.time()
    for i in range(ops):
        one(i)
    end = time.time()
    print(f"{start} {end}", flush=True)
    if store is not None:
        store.close()


def _round(url: str, mode: str, processes: int) -> float:
    """One round with ``processes`` workers; returns the aggregate seconds for all ops."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE), "worker", url, mode, str(OPS), str(n * KEYS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        spans = []
        for p in procs:
            assert p.stdout is not None
            start, end = (float(x) for x in p.stdout.readline().split())
            spans.append((start, end))
            p.wait(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            for pipe in (p.stdin, p.stdout):
                if pipe is not None:
                    pipe.close()
    return max(e for _, e in spans) - min(s for s, _ in spans)


def _figure(
    benchmark: Any,
    figures: Figures,
    url: str,
    processes: int,
    modes: tuple[str, str],
    fid: str,
    target: float | None = None,
) -> Figure:
    mine, theirs = modes
    base_times: list[float] = []
    times = interleaved(
        benchmark,
        lambda: _round(url, mine, processes),
        lambda: base_times.append(_round(url, theirs, processes)),
        rounds=ROUNDS,
        warmup=0,
    )
    total = OPS * processes
    what = {
        "evstate": "set",
        "hot": "update (increment) of one hot key",
        "hot-py": "update (increment) of one hot key, Python path",
    }[mine]
    evstate_rate = total / statistics.median(times)
    baseline_rate = total / statistics.median(base_times)
    return figures.add(
        Figure(
            fid=fid,
            name=f"redis {what}, {processes} process{'es' if processes > 1 else ''}",
            evstate=evstate_rate,
            baseline=baseline_rate,
            unit="ops/s",
            baseline_name="redis-py HSET" if theirs == "hset" else "redis-py HINCRBY",
            target="" if target is None else f">={target}x",
            met=None if target is None else evstate_rate / baseline_rate >= target,
            detail={
                "ops_per_process": OPS,
                "rounds": ROUNDS,
                "appendfsync": "everysec",
                "round_seconds": times,
                "baseline_round_seconds": base_times,
            },
        )
    )


@pytest.mark.parametrize("processes", [1, 2, 4])
def test_redis_set_throughput(
    benchmark: Any, figures: Figures, redis_url: str, processes: int
) -> None:
    fig = _figure(benchmark, figures, redis_url, processes, ("evstate", "hset"), f"r{processes}")
    assert fig.evstate > 0


def test_redis_hot_key_updates(benchmark: Any, figures: Figures, redis_url: str) -> None:
    fig = _figure(benchmark, figures, redis_url, 4, ("hot", "hincrby"), "c-hot", target=0.5)
    assert fig.evstate > 0


def test_redis_hot_key_updates_python_path(
    benchmark: Any, figures: Figures, redis_url: str
) -> None:
    fig = _figure(benchmark, figures, redis_url, 4, ("hot-py", "hincrby"), "c-hot-py")
    assert fig.evstate > 0


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "worker":
    _worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
