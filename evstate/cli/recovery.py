"""``evstate at / restore / verify / stats``: reading past states, checking the files.

These read the log and the snapshots, which no server function serves: they read the
store's files through a follower (no writer lock: the owner may keep running, and nothing
in the directory changes) or, with a config naming the redis adapter, the Redis store.
``snapshot`` and ``compact`` are in :mod:`evstate.cli.upkeep`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from evstate import Follower, Store, follow
from evstate.cli.common import (
    ProgressBar,
    UsageError,
    add_json_option,
    format_ms,
    parse_revision,
    parse_time,
    print_json,
)
from evstate.cli.hints import warn_if_unknown_scope
from evstate.cli.target import add_store_options, check_store_directory, open_reader
from evstate.errors import CorruptionError

__all__ = [
    "NO_LOCK",
    "TIMES",
    "register",
]

NO_LOCK = (
    "Reads the store's files without the writer lock (works while another process, e.g. "
    "evstate serve, owns the store), or the Redis store a --config names."
)
TIMES = (
    "TIME is ISO 8601 (2026-11-28T21:07:03Z; without an offset it is local time) or Unix seconds."
)


def _point(args: argparse.Namespace) -> dict[str, Any]:
    if args.time is not None:
        return {"time": parse_time(args.time)}
    return {"revision": args.revision}


def _at(args: argparse.Namespace) -> int:
    if args.key is not None and args.scope is None:
        raise UsageError("give SCOPE before KEY")
    with open_reader(args) as reader, ProgressBar("replaying") as bar:
        view = reader.at(progress=bar, **_point(args))
    if args.key is not None:
        value = view.get(args.scope, args.key)
        print_json(value, args)
        if value is None:
            warn_if_unknown_scope(args.scope, view.list_groups)
    elif args.scope is not None:
        found = view.list(args.scope)
        print_json(found, args)
        if not found:
            warn_if_unknown_scope(args.scope, view.list_groups)
    else:
        groups = view.list_groups()["groups"]
        state = {scope: view.list(scope) for scope in groups}
        print_json(
            {"revision": view.revision, "time": format_ms(view.timestamp), "state": state}, args
        )
    return 0


def _restore(args: argparse.Namespace) -> int:
    if os.path.abspath(args.source) == os.path.abspath(args.target):
        raise UsageError("SRC and DST must be different directories")
    check_store_directory(args.source)
    with ProgressBar("loading the log") as bar:
        follower = follow(args.source, live=False, progress=bar)
    with follower, ProgressBar("replaying") as bar:
        point = _point(args)
        path = follower.restore_to(args.target, progress=bar, **point)
    with follow(path, live=False) as restored:
        result = {"path": path, "revision": restored.revision, "keys": restored.stats()["keys"]}
    print_json(result, args)
    return 0


def _where(reader: Follower | Store) -> str:
    """The store's directory, or its Redis URL (without a password)."""
    return reader.path or str(getattr(reader, "url", "redis"))


def _summary(where: str, stats: dict[str, Any]) -> str:
    if stats.get("segments"):
        log = f"{stats['segments']} segments ({stats['log_bytes']} bytes)"
    else:
        log = f"{stats.get('events_in_log', 0)} events in the log"
    return (
        f"{where} at revision {stats['revision']}: {stats['keys']} keys, {log}, "
        f"{stats['snapshots']} snapshots; history retained from revision "
        f"{stats['oldest_revision']}"
    )


def _verify(args: argparse.Namespace) -> int:
    if args.directory:
        args.dir = args.directory
    try:
        reader = open_reader(args, label="loading the log")
    except CorruptionError as exc:
        if args.json:
            print_json({"ok": False, "problems": [str(exc)]}, args)
        else:
            print(f"problem: {exc}")
        return 1
    with reader, ProgressBar("verifying") as bar:
        problems = reader.verify(progress=bar)
        stats = reader.stats()
        where = _where(reader)
    if args.json:
        print_json({"ok": not problems, "store": where, "problems": problems, **stats}, args)
        return 1 if problems else 0
    for problem in problems:
        print(f"problem: {problem}")
    if problems:
        return 1
    print(f"ok: {_summary(where, stats)}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    with open_reader(args) as reader:
        print_json(reader.stats(), args)
    return 0


def register(sub: Any) -> None:
    """Add ``at``, ``restore``, ``verify`` and ``stats`` to the ``evstate`` subparsers ``sub``."""
    cmd = sub.add_parser(
        "at",
        help="print the state as of a past time or revision (all, a SCOPE, or SCOPE KEY)",
        description=(
            "Print the state exactly as of --time or --revision, as JSON: with SCOPE KEY the "
            "value, with SCOPE its key: value object, with neither every scope (and the "
            f"revision and time it resolved to). {TIMES} {NO_LOCK}"
        ),
    )
    add_store_options(cmd)
    _point_options(cmd)
    add_json_option(cmd)
    cmd.add_argument("scope", metavar="SCOPE", nargs="?")
    cmd.add_argument("key", metavar="KEY", nargs="?")
    cmd.set_defaults(handler=_at)

    cmd = sub.add_parser(
        "restore",
        help="write the state of SRC as of a time or revision into a new store DST",
        description=(
            "Write a new, independent store directory DST (missing or empty) holding the "
            "state of SRC as of --time or --revision; its revisions continue SRC's numbering. "
            "SRC is a store directory, only read (without the writer lock: it works while "
            f"another process owns it). {TIMES}"
        ),
    )
    cmd.add_argument("source", metavar="SRC", help="the store directory to read")
    cmd.add_argument("target", metavar="DST", help="the new store directory")
    _point_options(cmd)
    add_json_option(cmd)
    cmd.set_defaults(handler=_restore)

    cmd = sub.add_parser(
        "verify",
        help="check a store's files; exit 0 if healthy, 1 with each problem printed",
        description=(
            "Check every record checksum, revision continuity and every snapshot, and that "
            "the newest snapshot + replay, a full replay and the loaded state agree. Prints "
            "each problem ('problem: ...') and exits 1, or prints 'ok: ...' and exits 0; "
            'with --json one object {"ok", "store", "problems", and the stats}. Read-only: '
            "nothing is repaired (a torn tail at the end of the newest segment is not a "
            f"problem: the owner cuts it off at its next open). {NO_LOCK}"
        ),
    )
    add_store_options(cmd)
    add_json_option(cmd, "print one JSON object (ok, store, problems, stats) on one line")
    cmd.add_argument("directory", metavar="DIR", nargs="?", help="store directory (or --dir)")
    cmd.set_defaults(handler=_verify)

    cmd = sub.add_parser(
        "stats",
        help="print numbers about the store (revision, keys, files, retained range, owner)",
        description=(
            "Print revision, keys, scopes, segment and snapshot files and sizes, the retained "
            "range (oldest_revision, horizon_revision) and owner_pid (the process holding the "
            f"writer lock, if any) as JSON. {NO_LOCK}"
        ),
    )
    add_store_options(cmd)
    add_json_option(cmd)
    cmd.set_defaults(handler=_stats)


def _point_options(cmd: argparse.ArgumentParser) -> None:
    group = cmd.add_mutually_exclusive_group(required=True)
    group.add_argument("--time", metavar="TIME", help="the point in time")
    group.add_argument("--revision", type=parse_revision, metavar="REVISION", help="the revision")
