"""``evstate get / set / delete / update / list / groups``: the state functions, JSON in and out.

``get``, ``list`` and ``groups`` read through a follower (no lock: they work while a server
owns the directory, and never create it); ``set``, ``delete`` and ``update`` open the store
for writing, which needs the writer lock.
"""

from __future__ import annotations

import argparse
from typing import Any

from evstate.cli.common import (
    add_store_options,
    open_follower,
    open_writer,
    parse_json,
    print_json,
)

__all__ = [
    "READS",
    "WRITES",
    "register",
]

READS = "Reads without the writer lock (works while another process owns the store)."
WRITES = "Needs the writer lock: fails while another process (e.g. evstate serve) owns the store."


def _get(args: argparse.Namespace) -> int:
    with open_follower(args) as follower:
        print_json(follower.get(args.scope, args.key))
    return 0


def _list(args: argparse.Namespace) -> int:
    with open_follower(args) as follower:
        print_json(follower.list_values(args.scope) if args.values else follower.list(args.scope))
    return 0


def _groups(args: argparse.Namespace) -> int:
    with open_follower(args) as follower:
        print_json(follower.list_groups())
    return 0


def _set(args: argparse.Namespace) -> int:
    value = parse_json(args.value, "VALUE")
    with open_writer(args) as store:
        print_json(store.set(args.scope, args.key, value))
    return 0


def _delete(args: argparse.Namespace) -> int:
    with open_writer(args) as store:
        print_json(store.delete(args.scope, args.key))
    return 0


def _update(args: argparse.Namespace) -> int:
    ops = parse_json(args.ops, "OPS")
    with open_writer(args) as store:
        result = store.update(args.scope, args.key, ops)
    print_json(result)
    return 2 if result.get("errors") and args.strict else 0


def register(sub: Any) -> None:
    """Add the state commands to the ``evstate`` subparsers ``sub``."""

    def command(name: str, summary: str, detail: str) -> argparse.ArgumentParser:
        cmd: argparse.ArgumentParser = sub.add_parser(
            name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {detail}"
        )
        add_store_options(cmd)
        return cmd

    cmd = command("get", "print the value of SCOPE/KEY as JSON (null if missing)", READS)
    cmd.add_argument("scope", metavar="SCOPE")
    cmd.add_argument("key", metavar="KEY")
    cmd.set_defaults(handler=_get)

    cmd = command("list", "print every key: value of SCOPE as a JSON object", READS)
    cmd.add_argument("scope", metavar="SCOPE")
    cmd.add_argument(
        "--values",
        action="store_true",
        help="print a JSON list of the values in insertion order (iii's state::list)",
    )
    cmd.set_defaults(handler=_list)

    cmd = command("groups", "print the scopes that hold keys", READS)
    cmd.set_defaults(handler=_groups)

    cmd = command(
        "set",
        "set SCOPE/KEY to the JSON VALUE; print old and new value",
        f"VALUE '-' reads the JSON from stdin. {WRITES}",
    )
    cmd.add_argument("scope", metavar="SCOPE")
    cmd.add_argument("key", metavar="KEY")
    cmd.add_argument("value", metavar="VALUE", help='JSON, e.g. \'{"name": "Ada"}\', or -')
    cmd.set_defaults(handler=_set)

    cmd = command("delete", "delete SCOPE/KEY; print the deleted value", WRITES)
    cmd.add_argument("scope", metavar="SCOPE")
    cmd.add_argument("key", metavar="KEY")
    cmd.set_defaults(handler=_delete)

    cmd = command(
        "update",
        "apply a JSON list of update OPS to SCOPE/KEY atomically; print old and new value",
        'Ops as in docs/api.md, e.g. \'[{"type": "increment", "path": "logins", '
        "\"by\": 1}]'; OPS '-' reads stdin. An op that fails is skipped and listed under "
        f'"errors" (exit status 0, or 2 with --strict). {WRITES}',
    )
    cmd.add_argument("scope", metavar="SCOPE")
    cmd.add_argument("key", metavar="KEY")
    cmd.add_argument("ops", metavar="OPS", help="a JSON list of ops, or -")
    cmd.add_argument("--strict", action="store_true", help="exit 2 when any op failed")
    cmd.set_defaults(handler=_update)
