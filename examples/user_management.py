"""The State module doc's "User Management" flow, embedded (no server, no HTTP).

Run it twice: the users of the first run are still there in the second, because every
write is in the event log under ./data before the call returns. The doc's
``on-user-created`` trigger counts signups in ``analytics/user_stats`` and "sends" the
welcome email (recorded in scope ``emails``); the HTTP version of this example is
``examples/user_management_http.py`` (see examples/README.md).

    .venv/bin/python examples/user_management.py
    .venv/bin/python examples/user_management.py --dir /tmp/other-data
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import evstate
from evstate import UpdateOp


def register_triggers(store: evstate.Store) -> None:
    """The doc's on-user-created trigger; its writes commit with its cursor (exactly once)."""

    @store.trigger("on-user-created", scope="users", condition=lambda e: e.event_type == "created")
    def on_user_created(event: Any) -> None:
        user = event.new_value
        event.store.set(
            "emails",
            str(event.revision),
            {"to": user["email"], "subject": "Welcome!", "template": "welcome"},
        )
        event.store.update(
            "analytics",
            "user_stats",
            [UpdateOp.increment("total_users", 1), UpdateOp.set("last_signup", event.timestamp)],
        )


def create_user(store: evstate.Store, name: str, email: str) -> str:
    """httpCreateUser: store the user; the trigger does the rest."""
    user_id = str(time.time_ns())
    store.call(
        "state.set",
        {
            "scope": "users",
            "key": user_id,
            "value": {
                "id": user_id,
                "name": name,
                "email": email,
                "createdAt": int(time.time() * 1000),
                "status": "pending",
            },
        },
    )
    return user_id


def login(store: evstate.Store, user_id: str) -> dict[str, object]:
    """The doc's atomic update: lastLogin, loginCount and status in one step."""
    result = store.call(
        "state.update",
        {
            "scope": "users",
            "key": user_id,
            "ops": [
                UpdateOp.set("lastLogin", int(time.time() * 1000)),
                UpdateOp.increment("loginCount", 1),
                UpdateOp.set("status", "active"),
            ],
        },
    )
    return dict(result["new_value"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="./data", help="store directory (default ./data)")
    args = parser.parse_args()

    with evstate.open(args.dir) as store:
        register_triggers(store)
        before = store.list("users")
        print(f"opened {store.path} at revision {store.revision}: {len(before)} users already")
        alice = create_user(store, "Alice", "alice@example.com")
        bob = create_user(store, "Bob", "bob@example.com")
        print("created users", alice, "and", bob)
        print("alice after login:", login(store, alice))
        print("get bob:", store.call("state.get", {"scope": "users", "key": bob}))
        store.wait_for_triggers(timeout=10)  # read-your-writes for the demo's printout
        print("groups:", store.call("state.list_groups", {}))
        print("welcome emails sent:", len(store.list("emails")))
        print("analytics/user_stats:", store.get("analytics", "user_stats"))

    # "Restart": a new Store over the same directory rebuilds the state from the log.
    with evstate.open(args.dir) as store:
        users = store.list("users")
        assert alice in users and bob in users, "a restart lost users"
        print(
            f"after restart: revision {store.revision}, {len(users)} users, "
            f"total_users={store.get('analytics', 'user_stats')['total_users']}"
        )
        print("run me again: the count keeps growing, because the data is durable")


if __name__ == "__main__":
    main()
