"""A real writer process is killed with SIGKILL at random moments; nothing acked is lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import evstate
from evstate.backends.file.segment import read_header, scan_segment
from evstate.events import decode_entry

WRITER = Path(__file__).with_name("writer.py")
ROUNDS = 20


def replay_log(directory: Path) -> dict[str, dict[str, object]]:
    """An independent replay of the segment files (no Store involved)."""
    state: dict[str, dict[str, object]] = {}
    for seg in sorted(directory.glob("*.log")):
        data = seg.read_bytes()
        salt = read_header(data)[1]
        for _offset, payload in scan_segment(data, salt=salt).records:
            for record in decode_entry(payload).records:
                event = record.to_event()
                if event.event_type == "deleted":
                    state.get(event.scope, {}).pop(event.key, None)
                else:
                    state.setdefault(event.scope, {})[event.key] = event.new_value
    return {scope: keys for scope, keys in state.items() if keys}


def run_and_kill(directory: Path, threads: int, delay: float) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(directory), str(threads)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line == "ready\n":
                ready.set()
            else:
                lines.append(line)

    reader = threading.Thread(target=read)
    reader.start()
    assert ready.wait(30), "writer did not start"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    reader.join(10)
    proc.stdout.close()
    return lines


@pytest.mark.crash
def test_sigkill_loses_no_acknowledged_write(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("EVSTATE_CRASH_SEED", "20261128")))
    acked_keys: dict[str, int] = {}
    acked_incs = 0
    for round_no in range(ROUNDS):
        lines = run_and_kill(tmp_path, threads=rng.choice([1, 4]), delay=rng.uniform(0.05, 0.4))
        for line in lines:
            if line.startswith("set "):
                _, key, n = line.split()
                acked_keys[f"{round_no}:{key}"] = int(n)
            elif line == "inc\n":
                acked_incs += 1
        with evstate.open(tmp_path) as store:
            acked = store.list("acked")
            counter = (store.get("counter", "c") or {}).get("n", 0)
            state = {g: store.list(g) for g in store.list_groups()["groups"]}
            revision = store.revision
        # every acknowledged write of this round is there (keys restart per round)
        for line in lines:
            if line.startswith("set "):
                _, key, n = line.split()
                assert key in acked, f"round {round_no}: acknowledged {key} lost"
        # each round's writer numbers keys from 1 again, so the values are overwritten;
        # the counter only ever grows, and never below what was acknowledged in total
        assert counter >= acked_incs, f"round {round_no}: counter {counter} < acked {acked_incs}"
        assert state == replay_log(tmp_path), "state differs from a replay of the log"
        assert revision >= len(acked)
    assert len(acked_keys) > ROUNDS, (
        "the writer acknowledged almost nothing: the test tested nothing"
    )
