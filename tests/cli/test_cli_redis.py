"""A config naming the redis adapter is obeyed by every command (a real redis-server).

Nothing may fall back to ./data: each test runs in a directory where that would show.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli_helpers import WAIT, Result, ServeProcess, process_env, run_process

import evstate
from evstate import TriggerEvent

Serve = Callable[..., ServeProcess]


def test_every_command_obeys_a_redis_config(redis_config: str, tmp_path: Path) -> None:
    def run(*argv: str) -> Result:
        result = run_process(*argv, "--config", redis_config, cwd=tmp_path)
        assert "Traceback" not in result.err, (argv, result)
        return result

    assert run("set", "users", "u1", '{"n": 1}').json["new_value"] == {"n": 1}
    ops = '[{"type": "increment", "path": "n", "by": 2}]'
    assert run("update", "users", "u1", ops).json["new_value"] == {"n": 3}
    assert run("cas", "users", "u2", "--expected", "null", '"x"').json == {"swapped": True}
    assert run("get", "users", "u1").json == {"n": 3}
    assert run("list", "users").json == {"u1": {"n": 3}, "u2": "x"}
    assert run("keys", "users").json == {"keys": ["u1", "u2"]}
    assert run("groups").json == {"groups": ["users"]}
    assert run("delete", "users", "u2").json == "x"
    assert run("set", "tmp", "k", "1", "--ttl", "1h").code == 0
    assert 3_500_000 < run("ttl", "tmp", "k").json <= 3_600_000
    assert run("delete", "tmp", "k").json == 1
    log = [json.loads(line) for line in run("log", "--json").lines]
    kinds = ["created", "updated", "created", "deleted", "created", "deleted"]
    assert [e["event_type"] for e in log] == kinds
    history = run("history", "users", "u1", "--json").lines
    assert [json.loads(line)["revision"] for line in history] == [1, 2]
    assert [json.loads(line)["revision"] for line in run("tail", "-n", "1", "--json").lines] == [6]
    assert run("at", "--revision", "3", "users").json == {"u1": {"n": 3}, "u2": "x"}
    verify = run("verify")
    assert verify.code == 0 and verify.out.startswith("ok: redis://127.0.0.1:")
    assert run("verify", "--json").json["ok"] is True
    assert run("stats").json["revision"] == 6
    assert run("triggers").json == {"revision": 6, "owner": {}, "followers": {}}
    assert run("snapshot").json == {"revision": 6}
    assert run("compact", "--keep-revisions", "1").json["events_deleted"] == 5
    assert list(tmp_path.iterdir()) == [Path(redis_config)]  # no ./data appeared
    with evstate.open(config=redis_config) as store:  # it all went to Redis
        assert store.list("users") == {"u1": {"n": 3}}


def test_dir_beside_a_redis_config_is_refused(redis_config: str, tmp_path: Path) -> None:
    for argv in (["get", "s", "k"], ["set", "s", "k", "1"], ["log"], ["stats"], ["triggers"]):
        result = run_process(*argv, "--config", redis_config, "--dir", "data", cwd=tmp_path)
        assert result.code == 1, argv
        assert result.err == (
            f"evstate: --dir names a directory, but {redis_config} keeps the store in Redis "
            "(the redis adapter): give one of them\n"
        )
    assert not (tmp_path / "data").exists()


def test_triggers_of_a_redis_store_are_repaired_while_they_run(redis_config: str) -> None:
    seen: queue.Queue[int] = queue.Queue()

    def record(event: TriggerEvent) -> None:
        seen.put(event.revision)

    with evstate.open(config=redis_config) as store:  # another process of the fleet
        store.trigger("audit", record, start="earliest")
        for i in range(3):
            store.set("s", f"k{i}", i)
        assert [seen.get(timeout=WAIT) for _ in range(3)] == [1, 2, 3]
        store.wait_for_triggers(timeout=WAIT)
        status = run_process("triggers", "--config", redis_config, "audit").json
        assert status == {"name": "audit", "revision": 3, "cursor": 3, "lag": 0, "parked": 0}
        moved = run_process("triggers", "--config", redis_config, "audit", "--replay-from", "2")
        assert moved.json == {"name": "audit", "cursor": 1}
        assert [seen.get(timeout=WAIT) for _ in range(2)] == [2, 3]  # redelivered, live


def test_tail_follow_polls_redis(redis_config: str) -> None:
    argv = ["tail", "-f", "--json", "-n", "1", "--config", redis_config]
    with evstate.open(config=redis_config) as store:
        store.set("s", "before", 0)
    with (
        evstate.open(config=redis_config) as store,
        subprocess.Popen(
            [sys.executable, "-m", "evstate", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=process_env(),
        ) as proc,
    ):
        assert proc.stdout is not None and proc.stderr is not None
        lines: queue.Queue[str] = queue.Queue()
        stdout = proc.stdout
        pump = threading.Thread(target=lambda: [lines.put(line) for line in stdout])
        pump.start()
        try:
            assert json.loads(lines.get(timeout=WAIT))["key"] == "before"  # it is following
            got: list[Any] = []
            for i in range(3):
                store.set("s", f"live{i}", i)
                got.append(json.loads(lines.get(timeout=WAIT))["key"])
            assert got == ["live0", "live1", "live2"]
        finally:
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=WAIT)
            pump.join(timeout=WAIT)
        assert code == 0 and "Traceback" not in proc.stderr.read()


def test_serve_a_redis_config(serve: Serve, redis_config: str, tmp_path: Path) -> None:
    server = serve("--config", redis_config)
    url = server.url()
    assert run_process("set", "--url", url, "s", "k", '"via the server"').code == 0
    assert server.stop() == 0
    assert any("data in redis://127.0.0.1:" in line for line in server.lines)
    assert run_process("get", "--config", redis_config, "s", "k").json == "via the server"
    assert not (tmp_path / "data").exists()
