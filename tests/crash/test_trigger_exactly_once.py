"""SIGKILL while a trigger commits its writes with its cursor: the count stays exact."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import evstate
from evstate import UpdateOp

WRITER = Path(__file__).with_name("trigger_writer.py")
ROUNDS = 12


def count(event: object) -> None:
    event.store.update("out", "counter", [UpdateOp.increment("n", 1)])  # type: ignore[attr-defined]


@pytest.mark.crash
def test_counter_equals_matching_events_after_sigkills(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("EVSTATE_CRASH_SEED", "4")))
    for round_no in range(ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        with evstate.open(tmp_path) as store:
            store.trigger("count", count, scope="in", start="earliest")
            store.wait_for_triggers(timeout=60)
            matching = sum(1 for _ in store.events(scope="in"))
            counter = (store.get("out", "counter") or {}).get("n", 0)
            assert counter == matching, f"round {round_no}: {counter} != {matching}"
            assert store.verify() == []
    assert matching > ROUNDS
