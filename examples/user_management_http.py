"""The State module doc's "Example: User Management", as an HTTP service.

    .venv/bin/python examples/user_management_http.py        # http://127.0.0.1:8080

- ``POST /users`` with ``{"name", "email"}`` stores the user (``state.set``) and answers
  ``{"id"}``; ``GET /users/<id>`` answers the user, or 404 ``{"error": "User not found"}``.
- The ``on-user-created`` trigger (scope ``users``, condition: ``created``) "sends" the
  welcome email by recording it in scope ``emails`` (key = the event's revision, the
  idempotency key a real mail queue would get), and updates ``analytics/user_stats``
  (``increment total_users``, ``set last_signup``). Both writes go through ``event.store``,
  so they commit together with the trigger's cursor: exactly once, even across crashes.
- ``GET /analytics/user_stats`` and ``GET /emails`` show what the trigger did.
"""

from __future__ import annotations

import time
from typing import Any

from _web import JsonHandler, Route, arguments, serve

import evstate
from evstate import UpdateOp


def register_triggers(store: evstate.Store) -> None:
    """The doc's ``on-user-created`` trigger."""

    @store.trigger(
        "on-user-created", scope="users", condition=lambda event: event.event_type == "created"
    )
    def on_user_created(event: Any) -> None:
        user = event.new_value
        print(f"New user created: {user['email']}", flush=True)
        # queue.enqueue('emails.send', ...) in the doc; here the "queue" is a scope.
        event.store.set(
            "emails",
            str(event.revision),
            {"to": user["email"], "subject": "Welcome!", "template": "welcome", "user": user["id"]},
        )
        event.store.update(
            "analytics",
            "user_stats",
            [UpdateOp.increment("total_users", 1), UpdateOp.set("last_signup", event.timestamp)],
        )


def routes(store: evstate.Store) -> list[Route]:
    """The doc's http-create-user and http-get-user, plus two read-only views."""

    def create_user(request: JsonHandler) -> tuple[int, Any]:
        body = request.read_json()
        if not isinstance(body, dict) or not body.get("name") or not body.get("email"):
            return 400, {"error": "name and email are required"}
        user_id = str(time.time_ns())
        store.call(
            "state.set",
            {
                "scope": "users",
                "key": user_id,
                "value": {
                    "id": user_id,
                    "name": body["name"],
                    "email": body["email"],
                    "createdAt": int(time.time() * 1000),
                    "status": "pending",
                },
            },
        )
        return 201, {"id": user_id}

    def get_user(request: JsonHandler, user_id: str) -> tuple[int, Any]:
        user = store.call("state.get", {"scope": "users", "key": user_id})
        if user is None:
            return 404, {"error": "User not found"}
        return 200, user

    def user_stats(request: JsonHandler) -> tuple[int, Any]:
        return 200, store.get("analytics", "user_stats") or {"total_users": 0}

    def emails(request: JsonHandler) -> tuple[int, Any]:
        return 200, store.list_values("emails")

    return [
        ("POST", r"/users", create_user),
        ("GET", r"/users/([^/]+)", get_user),
        ("GET", r"/analytics/user_stats", user_stats),
        ("GET", r"/emails", emails),
    ]


def main() -> None:
    args = arguments(__doc__.splitlines()[0], "users", 8080).parse_args()
    store = evstate.open(args.dir)
    register_triggers(store)
    print(f"store {store.path} at revision {store.revision}", flush=True)
    serve(routes(store), args.host, args.port, store.close)


if __name__ == "__main__":
    main()
