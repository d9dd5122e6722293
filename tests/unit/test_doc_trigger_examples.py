"""The State module doc's trigger examples, live and across a restart with a backlog."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import evstate
from evstate import UpdateOp


def register_user_triggers(store: evstate.Store, log: dict[str, list[Any]]) -> None:
    def on_user_created(event: Any) -> None:
        log["welcome"].append(event.new_value["email"])
        event.store.update(
            "analytics",
            "user_stats",
            [UpdateOp.increment("total_users", 1), UpdateOp.set("last_signup", event.timestamp)],
        )

    store.trigger(
        "on-user-created",
        on_user_created,
        scope="users",
        condition=lambda e: e.event_type == "created",
        start="earliest",
    )

    def activated(event: Any) -> bool:
        return (
            event.event_type == "updated"
            and event.new_value.get("status") == "active"
            and event.old_value.get("status") != "active"
        )

    store.trigger(
        "on-user-activated",
        lambda e: log["activated"].append(e.key),
        scope="users",
        condition=activated,
        start="earliest",
    )
    store.trigger(
        "on-config-update",
        lambda e: log["config"].append((e.key, e.old_value, e.new_value)),
        scope="config",
        start="earliest",
    )


def first_half(store: evstate.Store) -> None:
    store.set("users", "1", {"email": "a@x", "status": "pending"})
    store.set("users", "2", {"email": "b@x", "status": "pending"})
    store.update("users", "1", [UpdateOp.set("status", "active")])
    store.set("config", "theme", "dark")


def second_half(store: evstate.Store) -> None:
    store.update("users", "1", [UpdateOp.set("status", "active")])  # already active: no fire
    store.update("users", "2", [UpdateOp.set("status", "active")])
    store.set("config", "theme", "light")
    store.delete("config", "theme")


EXPECTED = {
    "welcome": ["a@x", "b@x"],
    "activated": ["1", "2"],
    "config": [("theme", None, "dark"), ("theme", "dark", "light"), ("theme", "light", None)],
}


def check(store: evstate.Store, log: dict[str, list[Any]]) -> None:
    store.wait_for_triggers(timeout=10)
    assert log == EXPECTED
    stats = store.get("analytics", "user_stats")
    assert stats["total_users"] == 2
    assert stats["last_signup"] > 0


def new_log() -> dict[str, list[Any]]:
    return {"welcome": [], "activated": [], "config": []}


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_doc_examples_live(tmp_path: Path, kind: str) -> None:
    log = new_log()
    with evstate.open(None if kind == "memory" else tmp_path) as store:
        register_user_triggers(store, log)
        first_half(store)
        second_half(store)
        check(store, log)


def test_doc_examples_with_a_restart_and_backlog(tmp_path: Path) -> None:
    log = new_log()
    with evstate.open(tmp_path) as store:
        register_user_triggers(store, log)
        first_half(store)
        store.wait_for_triggers(timeout=10)
    with evstate.open(tmp_path) as store:  # written while no trigger runs: a backlog
        second_half(store)
    with evstate.open(tmp_path) as store:
        register_user_triggers(store, log)
        check(store, log)
