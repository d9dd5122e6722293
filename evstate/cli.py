"""The ``evstate`` command line: thin over the library, JSON in and out.

Errors a user can cause (missing directory, locked store, bad JSON) print one line to
stderr and exit with status 1 or 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import evstate
from evstate.errors import Error

__all__ = ["main"]


def _open(args: argparse.Namespace) -> evstate.Store:
    if args.config:
        return evstate.open(args.dir, config=args.config)
    return evstate.open(args.dir or "./data")


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"evstate: {what} is not valid JSON: {exc}") from None


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False))


def _run(args: argparse.Namespace) -> Any:
    command = args.command
    with _open(args) as store:
        if command == "get":
            return store.get(args.scope, args.key)
        if command == "set":
            return store.set(args.scope, args.key, _json_arg(args.value, "VALUE"))
        if command == "delete":
            return store.delete(args.scope, args.key)
        if command == "update":
            return store.update(args.scope, args.key, _json_arg(args.ops, "OPS"))
        if command == "list":
            return store.list(args.scope)
        if command == "groups":
            return store.list_groups()
    raise AssertionError(command)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to generate docs/cli.md)."""
    parser = argparse.ArgumentParser(prog="evstate", description="evstate: event-sourced state")
    parser.add_argument("--version", action="version", version=f"evstate {evstate.__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", help="store directory (default ./data)")
    common.add_argument("--config", help="config.yaml describing the store")
    sub = parser.add_subparsers(dest="command", required=True)
    from evstate import cli_serve

    cli_serve.register(sub)
    for name, help_text, fields in [
        ("get", "print the value of SCOPE/KEY (null if missing)", ["scope", "key"]),
        ("set", "set SCOPE/KEY to the JSON VALUE", ["scope", "key", "value"]),
        ("delete", "delete SCOPE/KEY, print the deleted value", ["scope", "key"]),
        ("update", "apply the JSON list of update OPS to SCOPE/KEY", ["scope", "key", "ops"]),
        ("list", "print every key: value of SCOPE", ["scope"]),
        ("groups", "print the scopes that hold keys", []),
    ]:
        cmd = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        for field in fields:
            cmd.add_argument(field, metavar=field.upper())
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``evstate`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if getattr(args, "handler", None) is not None:
        return int(args.handler(args))
    try:
        _print(_run(args))
    except Error as exc:
        print(f"evstate: {exc.message.splitlines()[0] if exc.message else exc}", file=sys.stderr)
        if len(exc.message.splitlines()) > 1:
            print(exc.message, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
