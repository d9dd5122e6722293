"""evstate triggers: status without the lock; --replay-from and --drop-parked repairs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import RawWorker, Result, ServeProcess, run_process

import evstate
from evstate import follow

Cli = Callable[..., Result]


def failing(event: Any) -> None:
    if event.key == "bad":
        raise RuntimeError("poison")


@pytest.fixture
def store_dir(tmp_path: Path) -> str:
    """A store whose trigger 'audit' has processed everything and parked revision 2."""
    with evstate.open(tmp_path) as store:
        store.trigger("audit", failing, start="earliest")
        store.set("s", "ok", 1)
        store.set("s", "bad", 2)
        store.set("s", "ok2", 3)
        store.wait_for_triggers(timeout=10)
    return str(tmp_path)


def test_status_without_the_lock(cli: Cli, store_dir: str) -> None:
    with evstate.open(store_dir):  # the owner runs
        status = cli("triggers", "--dir", store_dir).json
        assert status == {
            "revision": 3,
            "owner": {"audit": {"cursor": 3, "lag": 0, "parked": 1}},
            "followers": {},
        }
        one = cli("triggers", "--dir", store_dir, "audit").json
        assert one == {"name": "audit", "revision": 3, "cursor": 3, "lag": 0, "parked": 1}
        parked = cli("triggers", "--dir", store_dir, "audit", "--parked").json
        assert [p["revision"] for p in parked] == [2] and "poison" in parked[0]["error"]
        result = cli("triggers", "--dir", store_dir, "audit", "--drop-parked")
        assert result.code == 1 and "needs the writer lock" in result.err


def test_replay_from_and_drop_parked(cli: Cli, store_dir: str) -> None:
    assert cli("triggers", "--dir", store_dir, "audit", "--replay-from", "2").json == {
        "name": "audit",
        "cursor": 1,
    }
    assert cli("triggers", "--dir", store_dir, "audit").json["lag"] == 2
    assert cli("triggers", "--dir", store_dir, "audit", "--drop-parked", "2").json == {
        "name": "audit",
        "dropped": 1,
    }
    assert cli("triggers", "--dir", store_dir, "audit").json["parked"] == 0
    seen: list[int] = []
    with evstate.open(store_dir) as store:  # the owner resumes at the moved cursor
        store.trigger("audit", lambda e: seen.append(e.revision))
        store.wait_for_triggers(timeout=10)
    assert seen == [2, 3]


def test_unknown_trigger_and_bad_usage(cli: Cli, store_dir: str) -> None:
    result = cli("triggers", "--dir", store_dir, "nope")
    assert result.code == 1 and "no trigger named 'nope'" in result.err
    result = cli("triggers", "--dir", store_dir, "--replay-from", "2")
    assert result.code == 1 and "need a trigger NAME" in result.err
    result = cli("triggers", "--dir", store_dir, "audit", "--drop-parked", "x")
    assert result.code == 1 and "not a revision number" in result.err


def test_follower_triggers(cli: Cli, store_dir: str) -> None:
    with follow(store_dir) as follower:
        follower.trigger("mirror", lambda e: None, start="earliest")
        follower.wait_for_triggers(timeout=5)
        result = cli("triggers", "--dir", store_dir, "mirror", "--follower", "--replay-from", "1")
        assert result.code == 1 and "running in another process" in result.err
    status = cli("triggers", "--dir", store_dir).json
    assert status["followers"] == {"mirror": {"cursor": 3, "lag": 0, "parked": 0}}
    moved = cli("triggers", "--dir", store_dir, "mirror", "--follower", "--replay-from", "2")
    assert moved.json == {"name": "mirror", "cursor": 1}
    assert cli("triggers", "--dir", store_dir, "mirror", "--follower").json["lag"] == 2
    dropped = cli("triggers", "--dir", store_dir, "mirror", "--follower", "--drop-parked")
    assert dropped.json == {"name": "mirror", "dropped": 0}


def test_replay_from_never_claims_a_move_that_will_not_stick(cli: Cli, tmp_path: Path) -> None:
    """Batch records and snapshots carry cursors too; a later replay wins over them."""
    with evstate.open(tmp_path) as store:
        store.trigger(
            "count",
            lambda e: e.store.update("n", "n", [{"type": "increment", "path": "c", "by": 1}]),
            scope="s",
            start="earliest",
        )
        for i in range(3):
            store.set("s", f"k{i}", i)
        store.wait_for_triggers(timeout=10)
        store.snapshot()
    result = cli("triggers", "--dir", str(tmp_path), "count", "--replay-from", "1")
    assert result.code == 0, result
    assert result.json == {"name": "count", "cursor": 0}
    with evstate.open(tmp_path) as store:  # the owner resumes from the moved cursor
        assert store.trigger_status()["count"]["cursor"] == 0


def test_replay_from_moves_a_server_trigger(
    serve: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    """A worker's trigger on evstate serve: stop the server, replay, start it, re-register."""
    data = str(tmp_path / "data")
    server = serve()
    url = server.url()
    worker = RawWorker(url, "audit::on-order", {"scope": "orders"})
    for key in ("o1", "o2", "o3"):
        assert run_process("set", "--url", url, "orders", key, "{}").code == 0
    assert worker.keys(3) == ["o1", "o2", "o3"]
    worker.close()
    assert server.stop() == 0
    assert run_process("snapshot", "--dir", data).code == 0  # a snapshot holds the cursor too
    owner = run_process("triggers", "--dir", data).json["owner"]
    [name] = owner
    assert name.startswith("worker:audit::on-order:") and owner[name]["cursor"] == 3
    moved = run_process("triggers", "--dir", data, name, "--replay-from", "2")
    assert moved.code == 0, moved
    assert moved.json == {"name": name, "cursor": 1}
    server = serve()
    worker = RawWorker(server.url(), "audit::on-order", {"scope": "orders"})
    try:
        assert worker.keys(2) == ["o2", "o3"]  # delivered again from revision 2
        while_running = run_process("triggers", "--dir", data, name, "--replay-from", "1")
        assert while_running.code == 1 and while_running.err.count("\n") == 1
        assert "stop that process (e.g. evstate serve), run this again" in while_running.err
    finally:
        worker.close()
