"""Freshness: a follower in another process sees a write within 100 ms of its fsync."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from evstate import follow

WRITER = Path(__file__).with_name("freshness_writer.py")
ROOT = Path(__file__).resolve().parents[2]
WRITES = 40
BOUND_S = 0.100


def measure(directory: Path, *, watch: bool) -> list[float]:
    """Seconds from each write's acknowledgement (after fsync) to the follower seeing it."""
    seen: dict[int, float] = {}
    with follow(directory, watch=watch) as follower:

        def consume() -> None:
            for event in follower.tail(start=1, idle_timeout=10):
                seen[event.revision] = time.monotonic()
                if event.revision >= WRITES:
                    return

        reader = threading.Thread(target=consume, daemon=True)
        reader.start()
        proc = subprocess.run(
            [sys.executable, str(WRITER), str(directory), str(WRITES), "0.02"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
        )
        reader.join(timeout=10)
    acked = {
        int(rev): float(t)
        for rev, t in (line.split() for line in proc.stdout.splitlines()[1:] if line.strip())
    }
    assert sorted(acked) == list(range(1, WRITES + 1))
    assert sorted(seen) == list(range(1, WRITES + 1)), "the follower missed writes"
    # The follower may see a record before the owner's fsync returns: that counts as 0.
    return [max(seen[rev] - acked[rev], 0.0) for rev in acked]


@pytest.mark.parametrize("watch", [True, False], ids=["watchdog", "polling-only"])
def test_a_write_is_visible_within_100ms_of_its_fsync(tmp_path: Path, watch: bool) -> None:
    delays = measure(tmp_path, watch=watch)
    assert max(delays) < BOUND_S, sorted(delays)[-5:]
