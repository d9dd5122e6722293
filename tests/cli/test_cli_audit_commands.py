"""log / tail / history: the audit trail, read without the writer lock."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_helpers import ROOT, Result

import evstate

Cli = Callable[..., Result]


@pytest.fixture
def store_dir(tmp_path: Path) -> str:
    with evstate.open(tmp_path) as store:
        store.set("users", "u1", {"n": 1})
        store.update("users", "u1", [{"type": "increment", "path": "n", "by": 2}])
        store.set("config", "theme", "dark")
        store.delete("users", "u1")
        store.set("users", "u2", {"n": 9})
    return str(tmp_path)


def test_log_json_lines(cli: Cli, store_dir: str) -> None:
    result = cli("log", "--dir", store_dir, "--json")
    events = [json.loads(line) for line in result.lines]
    assert [e["revision"] for e in events] == [1, 2, 3, 4, 5]
    assert events[1] == {
        "message_type": "state",
        "event_type": "updated",
        "scope": "users",
        "key": "u1",
        "old_value": {"n": 1},
        "new_value": {"n": 3},
        "revision": 2,
        "timestamp": events[1]["timestamp"],
    }


def test_log_filters_and_ranges(cli: Cli, store_dir: str) -> None:
    def revisions(*argv: str) -> list[int]:
        result = cli("log", "--dir", store_dir, "--json", *argv)
        assert result.code == 0, result.err
        return [json.loads(line)["revision"] for line in result.lines]

    assert revisions("--scope", "users") == [1, 2, 4, 5]
    assert revisions("--scope", "users", "--key", "u1") == [1, 2, 4]
    assert revisions("--from", "2", "--to", "4") == [2, 3, 4]
    assert revisions("--limit", "2") == [1, 2]
    with evstate.open(store_dir) as store:
        stamp = store.history("config", "theme")[0].timestamp
    iso = datetime.fromtimestamp(stamp / 1000, UTC).isoformat()
    assert revisions("--since", iso)[0] <= 3
    assert 3 in revisions("--since", str(stamp / 1000))
    assert revisions("--until", "0") == []


def test_log_table(cli: Cli, store_dir: str) -> None:
    lines = cli("log", "--dir", store_dir).lines
    assert lines[0].split() == ["REVISION", "TIME", "(UTC)", "TYPE", "SCOPE/KEY", "CHANGE"]
    assert lines[2].split()[2:] == ["updated", "users/u1", '{"n":', "1}", "->", '{"n":', "3}"]
    assert lines[4].endswith('{"n": 3} -> (deleted)')
    assert len(lines) == 6


def test_bad_time_is_one_line(cli: Cli, store_dir: str) -> None:
    result = cli("log", "--dir", store_dir, "--since", "soon")
    assert result.code == 1
    assert result.err.startswith("evstate: bad time 'soon': use ISO 8601")


def test_history(cli: Cli, store_dir: str) -> None:
    result = cli("history", "--dir", store_dir, "users", "u1", "--json")
    assert [json.loads(line)["event_type"] for line in result.lines] == [
        "created",
        "updated",
        "deleted",
    ]
    assert len(cli("history", "--dir", store_dir, "users", "u1", "--limit", "1").lines) == 2


def test_tail_without_follow(cli: Cli, store_dir: str) -> None:
    result = cli("tail", "--dir", store_dir, "-n", "2", "--json")
    assert [json.loads(line)["revision"] for line in result.lines] == [4, 5]
    result = cli("tail", "--dir", store_dir, "-n", "1", "--scope", "config", "--json")
    assert [json.loads(line)["key"] for line in result.lines] == ["theme"]
    assert len(cli("tail", "--dir", store_dir, "-n", "50").lines) == 6


def test_history_compacted_is_one_line(cli: Cli, tmp_path: Path) -> None:
    with evstate.open(
        tmp_path, segment_size_bytes=4096, retention={"revisions": 5}, save_interval_ms=3_600_000
    ) as store:
        for i in range(200):
            store.set("s", f"k{i % 3}", "x" * 60)
            if i in (100, 199):
                store.snapshot()
        store.compact()
    result = cli("log", "--dir", str(tmp_path), "--from", "1")
    assert result.code == 1
    assert result.err.startswith("evstate: revision 1 is before the retained history")
    assert result.err.count("\n") == 1
    result = cli("at", "--dir", str(tmp_path), "--revision", "3")
    assert result.code == 1 and "retention horizon" in result.err


def test_tail_follow_is_a_live_follower_until_ctrl_c(tmp_path: Path) -> None:
    argv = ["tail", "-f", "--json", "-n", "1", "--dir", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with evstate.open(tmp_path) as owner:  # the owner keeps the writer lock throughout
        owner.set("s", "before", 0)
        with subprocess.Popen(
            [sys.executable, "-m", "evstate", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        ) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            lines: queue.Queue[str] = queue.Queue()
            stdout = proc.stdout
            pump = threading.Thread(target=lambda: [lines.put(line) for line in stdout])
            pump.start()
            try:
                first = json.loads(lines.get(timeout=20))
                assert first["key"] == "before"
                for i in range(3):
                    owner.set("s", f"live{i}", i)
                    event = json.loads(lines.get(timeout=10))
                    assert (event["key"], event["new_value"]) == (f"live{i}", i)
            finally:
                time.sleep(0.05)
                proc.send_signal(signal.SIGINT)
                code = proc.wait(timeout=10)
                pump.join(timeout=10)
            err = proc.stderr.read()
        assert code == 0 and "Traceback" not in err
