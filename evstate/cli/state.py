"""``evstate get / list / groups / keys / ttl / set / update / delete / cas``: state functions.

Each works on the target :mod:`evstate.cli.target` resolves:

- a running server (``--url`` or ``$EVSTATE_URL``): one call of the server's state function
  each (:mod:`evstate.cli.remote`), so they work while the server owns the directory;
- a directory: reads through a follower (no lock, never created), writes through the store
  (the writer lock; a store is created only in a missing or empty directory);
- Redis (a config naming the redis adapter): that store, for reads and writes.

JSON in (VALUE, OPS, ``--expected``; ``-`` reads stdin) and JSON out. ``set --ttl`` and
``cas --ttl`` give the key a time-to-live (``500ms``, ``30s``, ``5m``, ``2h``, ``1d``);
``ttl`` prints the milliseconds it has left, or null.
"""

from __future__ import annotations

import argparse
from typing import Any

from evstate import Follower, Store
from evstate.cli.common import add_json_option, parse_duration, parse_json, print_json
from evstate.cli.hints import warn_if_unknown_scope
from evstate.cli.remote import ServerStore
from evstate.cli.target import (
    Target,
    add_store_options,
    open_reader,
    open_writer,
    resolve_target,
    send_through_server_hint,
)
from evstate.ops import parse_ops

__all__ = [
    "READS",
    "TTL_HELP",
    "WRITES",
    "register",
]

READS = (
    "With --url or EVSTATE_URL it asks the running server; else it reads the directory "
    "without the writer lock (works while another process owns the store)."
)
WRITES = (
    "With --url or EVSTATE_URL it goes through the running server; else it needs the "
    "writer lock (fails while another process, e.g. evstate serve, owns the directory)."
)

TTL_HELP = "expire the key after DURATION (500ms, 30s, 5m, 2h, 1d); default: never"


def _reader(args: argparse.Namespace) -> ServerStore | Follower | Store:
    target = resolve_target(args)
    if target.url is not None:
        return ServerStore(target.url, token=target.token)
    return open_reader(args, target=target)


def _writer(args: argparse.Namespace, target: Target | None = None) -> ServerStore | Store:
    target = target or resolve_target(args)
    if target.url is not None:
        return ServerStore(target.url, token=target.token)
    return open_writer(args, lock_hint=send_through_server_hint, target=target)


def _answer(
    store: ServerStore | Store, args: argparse.Namespace, found: Any, *, missing: bool
) -> int:
    """Print ``found``; if ``missing`` (nothing there), hint on stderr at a mistyped scope."""
    print_json(found, args)
    if missing:
        warn_if_unknown_scope(args.scope, store.list_groups)
    return 0


def _get(args: argparse.Namespace) -> int:
    with _reader(args) as store:
        value = store.get(args.scope, args.key)
        return _answer(store, args, value, missing=value is None)


def _list(args: argparse.Namespace) -> int:
    with _reader(args) as store:
        found: Any = store.list_values(args.scope) if args.values else store.list(args.scope)
        return _answer(store, args, found, missing=not found)


def _groups(args: argparse.Namespace) -> int:
    with _reader(args) as store:
        print_json(store.list_groups(), args)
    return 0


def _keys(args: argparse.Namespace) -> int:
    with _reader(args) as store:
        keys = store.list_keys(args.scope)
        return _answer(store, args, {"keys": keys}, missing=not keys)


def _ttl(args: argparse.Namespace) -> int:
    with _reader(args) as store:
        remaining = store.ttl(args.scope, args.key)
        missing = remaining is None and store.get(args.scope, args.key) is None
        return _answer(store, args, remaining, missing=missing)


def _set(args: argparse.Namespace) -> int:
    value = parse_json(args.value, "VALUE")
    ttl_ms = None if args.ttl is None else parse_duration(args.ttl)
    with _writer(args) as store:
        print_json(store.set(args.scope, args.key, value, ttl_ms=ttl_ms), args)
    return 0


def _delete(args: argparse.Namespace) -> int:
    with _writer(args) as store:
        deleted = store.delete(args.scope, args.key)
        return _answer(store, args, deleted, missing=deleted is None)


def _update(args: argparse.Namespace) -> int:
    ops = parse_json(args.ops, "OPS")
    target = resolve_target(args)
    if target.url is None:
        parse_ops(ops)  # a malformed op fails here, before a store is opened or created
    with _writer(args, target) as store:
        result = store.update(args.scope, args.key, ops)
    print_json(result, args)
    return 2 if result.get("errors") and args.strict else 0


def _cas(args: argparse.Namespace) -> int:
    expected = parse_json(args.expected, "--expected")
    value = parse_json(args.value, "VALUE")
    ttl_ms = None if args.ttl is None else parse_duration(args.ttl)
    with _writer(args) as store:
        result = store.compare_and_set(args.scope, args.key, expected, value, ttl_ms=ttl_ms)
    print_json(result, args)
    return 0 if result.get("swapped") else 2


def register(sub: Any) -> None:
    """Add the state commands to the ``evstate`` subparsers ``sub``."""

    def command(name: str, summary: str, detail: str) -> argparse.ArgumentParser:
        cmd: argparse.ArgumentParser = sub.add_parser(
            name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {detail}"
        )
        add_store_options(cmd, server=True)
        add_json_option(cmd)
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
        help="print a JSON list of the values instead (iii's state::list)",
    )
    cmd.set_defaults(handler=_list)

    cmd = command("groups", "print the scopes that hold keys", READS)
    cmd.set_defaults(handler=_groups)

    cmd = command("keys", 'print the keys of SCOPE, sorted, as {"keys": [...]}', READS)
    cmd.add_argument("scope", metavar="SCOPE")
    cmd.set_defaults(handler=_keys)

    cmd = command(
        "ttl",
        "print the milliseconds SCOPE/KEY has left to live (null: no TTL, or no such key)",
        READS,
    )
    cmd.add_argument("scope", metavar="SCOPE")
    cmd.add_argument("key", metavar="KEY")
    cmd.set_defaults(handler=_ttl)

    cmd = command(
        "set",
        "set SCOPE/KEY to the JSON VALUE; print old and new value",
        f"VALUE is JSON (a string needs its quotes: '\"hello\"'); '-' reads it from stdin. "
        f"{WRITES}",
    )
    cmd.add_argument("scope", metavar="SCOPE")
    cmd.add_argument("key", metavar="KEY")
    cmd.add_argument("value", metavar="VALUE", help='JSON, e.g. \'{"name": "Ada"}\', or -')
    cmd.add_argument("--ttl", metavar="DURATION", help=TTL_HELP)
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

    cmd = command(
        "cas",
        "set SCOPE/KEY to VALUE only if it holds the --expected value (compare-and-set)",
        "--expected null means: only if the key is absent. Equality is JSON equality (key "
        'order does not matter). Prints {"swapped": true}, or {"swapped": false, "current": '
        f"<the value there>}} and exits 2. {WRITES}",
    )
    cmd.add_argument("scope", metavar="SCOPE")
    cmd.add_argument("key", metavar="KEY")
    cmd.add_argument(
        "--expected", required=True, metavar="JSON", help="the value it must hold now, or null"
    )
    cmd.add_argument("value", metavar="VALUE", help="the JSON value to write, or -")
    cmd.add_argument("--ttl", metavar="DURATION", help=TTL_HELP)
    cmd.set_defaults(handler=_cas)
