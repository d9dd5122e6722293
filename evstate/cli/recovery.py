"""``evstate at / restore / verify / stats / snapshot / compact``: recovery and upkeep.

``at``, ``restore``, ``verify`` and ``stats`` read through a follower: no writer lock, the
owner may keep running, and nothing in the store directory is changed. ``snapshot`` and
``compact`` change the directory and need the writer lock.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from evstate import follow
from evstate.cli.common import (
    ProgressBar,
    UsageError,
    add_store_options,
    format_ms,
    open_follower,
    open_writer,
    parse_revision,
    parse_time,
    print_json,
)
from evstate.errors import CorruptionError

__all__ = [
    "NO_LOCK",
    "TIMES",
    "WRITES",
    "register",
]

NO_LOCK = "Reads without the writer lock (works while another process owns the store)."
WRITES = "Needs the writer lock: fails while another process (e.g. evstate serve) owns the store."
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
    with open_follower(args) as follower, ProgressBar("replaying") as bar:
        view = follower.at(progress=bar, **_point(args))
    if args.key is not None:
        print_json(view.get(args.scope, args.key))
    elif args.scope is not None:
        print_json(view.list(args.scope))
    else:
        groups = view.list_groups()["groups"]
        print_json(
            {
                "revision": view.revision,
                "time": format_ms(view.timestamp),
                "state": {scope: view.list(scope) for scope in groups},
            }
        )
    return 0


def _restore(args: argparse.Namespace) -> int:
    if os.path.abspath(args.source) == os.path.abspath(args.target):
        raise UsageError("SRC and DST must be different directories")
    with ProgressBar("loading the log") as bar:
        follower = follow(args.source, live=False, progress=bar)
    with follower, ProgressBar("replaying") as bar:
        point = _point(args)
        path = follower.restore_to(args.target, progress=bar, **point)
    with follow(path, live=False) as restored:
        print_json(
            {
                "path": path,
                "revision": restored.revision,
                "keys": restored.stats()["keys"],
            }
        )
    return 0


def _verify(args: argparse.Namespace) -> int:
    if args.directory:
        args.dir = args.directory
    try:
        follower = open_follower(args, label="loading the log")
    except CorruptionError as exc:
        print(f"problem: {exc}")
        return 1
    with follower, ProgressBar("verifying") as bar:
        problems = follower.verify(progress=bar)
        stats = follower.stats()
    for problem in problems:
        print(f"problem: {problem}")
    if problems:
        return 1
    print(
        f"ok: {follower.path} at revision {stats['revision']}: {stats['keys']} keys, "
        f"{stats['segments']} segments ({stats['log_bytes']} bytes), {stats['snapshots']} "
        f"snapshots; history retained from revision {stats['oldest_revision']}"
    )
    return 0


def _stats(args: argparse.Namespace) -> int:
    with open_follower(args) as follower:
        print_json(follower.stats())
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    with open_writer(args) as store, ProgressBar("writing a snapshot"):
        print_json({"revision": store.snapshot()})
    return 0


def _compact(args: argparse.Namespace) -> int:
    retention: dict[str, Any] = {}
    if args.keep_revisions is not None:
        retention["revisions"] = args.keep_revisions
    if args.keep_duration is not None:
        retention["duration"] = args.keep_duration
    options = {"retention": retention} if retention else {}
    with open_writer(args, **options) as store, ProgressBar("compacting") as bar:
        result: dict[str, Any] = {}
        if not args.no_snapshot:
            bar.phase("writing a snapshot")
            result["snapshot_revision"] = store.snapshot()
            bar.phase("compacting")
        result.update(store.compact())
    print_json(result)
    return 0


def register(sub: Any) -> None:
    """Add the recovery and upkeep commands to the ``evstate`` subparsers ``sub``."""
    cmd = sub.add_parser(
        "at",
        help="print the state as of a past time or revision (all, a SCOPE, or SCOPE KEY)",
        description=(
            "Print the state exactly as of --time or --revision: with SCOPE KEY the value, with "
            "SCOPE its key: value object, with neither every scope (and the revision and time "
            f"it resolved to). {TIMES} {NO_LOCK}"
        ),
    )
    add_store_options(cmd)
    _point_options(cmd)
    cmd.add_argument("scope", metavar="SCOPE", nargs="?")
    cmd.add_argument("key", metavar="KEY", nargs="?")
    cmd.set_defaults(handler=_at)

    cmd = sub.add_parser(
        "restore",
        help="write the state of SRC as of a time or revision into a new store DST",
        description=(
            "Write a new, independent store directory DST (missing or empty) holding the "
            "state of SRC as of --time or --revision; its revisions continue SRC's numbering. "
            f"SRC is only read: {NO_LOCK[0].lower()}{NO_LOCK[1:]} {TIMES}"
        ),
    )
    cmd.add_argument("source", metavar="SRC", help="the store directory to read")
    cmd.add_argument("target", metavar="DST", help="the new store directory")
    _point_options(cmd)
    cmd.set_defaults(handler=_restore)

    cmd = sub.add_parser(
        "verify",
        help="check a store's files; exit 0 if healthy, 1 with each problem printed",
        description=(
            "Check every record checksum, revision continuity and every snapshot, and that "
            "the newest snapshot + replay, a full replay and the loaded state agree. Prints "
            "each problem ('problem: ...') and exits 1, or prints 'ok: ...' and exits 0. "
            "Read-only: nothing is repaired (a torn tail at the end of the newest segment is "
            f"not a problem: the owner cuts it off at its next open). {NO_LOCK}"
        ),
    )
    add_store_options(cmd)
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
    cmd.set_defaults(handler=_stats)

    cmd = sub.add_parser(
        "snapshot",
        help="write a snapshot of the current state now",
        description=f"Write a snapshot of the current state now; print its revision. {WRITES}",
    )
    add_store_options(cmd)
    cmd.set_defaults(handler=_snapshot)

    cmd = sub.add_parser(
        "compact",
        help="apply the retention policy now: delete history it no longer keeps",
        description=(
            "Take a snapshot (unless --no-snapshot), then apply the retention policy (the "
            "config's `retention`, default the last 1,000,000 revisions, or the --keep-* "
            "options): delete the segments and snapshots wholly older than the new horizon. "
            f"{WRITES}"
        ),
    )
    add_store_options(cmd)
    cmd.add_argument("--keep-revisions", type=int, metavar="N", help="keep the last N revisions")
    cmd.add_argument(
        "--keep-duration", metavar="AGE", help="keep history younger than AGE (7d, 12h, 30m)"
    )
    cmd.add_argument("--no-snapshot", action="store_true", help="do not take a snapshot first")
    cmd.set_defaults(handler=_compact)


def _point_options(cmd: argparse.ArgumentParser) -> None:
    group = cmd.add_mutually_exclusive_group(required=True)
    group.add_argument("--time", metavar="TIME", help="the point in time")
    group.add_argument("--revision", type=parse_revision, metavar="REVISION", help="the revision")
