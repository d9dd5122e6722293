"""Durable triggers: cursor persistence specific to the file store.

The delivery cases every store kind must pass are in tests/conformance/test_trigger_api.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import evstate
from evstate import UpdateOp


def test_exactly_once_cursor_is_in_snapshots(tmp_path: Path) -> None:
    with evstate.open(tmp_path) as store:
        store.trigger(
            "c",
            lambda e: e.store.update("out", "n", [UpdateOp.increment("v", 1)]),
            scope="in",
        )
        for i in range(20):
            store.set("in", "k", i)
        store.wait_for_triggers(timeout=5)
        store.snapshot()
    (tmp_path / "triggers.cbor").unlink()  # only the snapshot and the log know the cursor now
    with evstate.open(tmp_path) as store:
        store.trigger(
            "c",
            lambda e: e.store.update("out", "n", [UpdateOp.increment("v", 1)]),
            scope="in",
        )
        store.wait_for_triggers(timeout=5)
        assert store.get("out", "n") == {"v": 20}


def test_replay_and_delete_survive_reopen_over_snapshot_cursors(tmp_path: Path) -> None:
    """Regression: a snapshot or batch record holding a higher cursor undid replay_trigger."""

    def count(event: Any) -> None:
        event.store.update("out", "n", [UpdateOp.increment("v", 1)])

    with evstate.open(tmp_path) as store:
        store.trigger("c", count, scope="in", start="earliest")
        for i in range(10):
            store.set("in", "k", i)
        store.wait_for_triggers(timeout=5)
        store.snapshot()  # the snapshot holds the cursor
        store.unregister_trigger("c")
        store.replay_trigger("c", 1)
        store.trigger("gone", print, start="earliest").unregister()
        store.snapshot()
        store.delete_trigger("gone")
    with evstate.open(tmp_path) as store:
        assert store.trigger_status()["c"]["cursor"] == 0
        assert "gone" not in store.trigger_status()
        store.trigger("c", count, scope="in")
        store.wait_for_triggers(timeout=5)
        assert store.get("out", "n") == {"v": 20}  # replayed from revision 1
