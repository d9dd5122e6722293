"""``evstate triggers``: trigger status, and the two repairs a shell can make.

Status (cursor, lag, parked) is read without the writer lock: the owner's triggers (a
server's worker triggers among them, named ``worker:<function_id>:<digest>``) and follower
triggers (cursor files under ``<store>/followers``). Running a parked event's handler again
needs the handler, which only the process that registered the trigger has
(``Store.replay_parked``); from the shell there are the two repairs that need no handler:
``--replay-from REVISION`` moves the cursor, so that delivery continues at REVISION when
the trigger next runs; ``--drop-parked`` forgets dead letters.

The owner's cursors live in its process while it runs, so a file store's repairs need
the writer lock: stop ``evstate serve``, repair, start it again (a worker trigger resumes
from the moved cursor when its worker registers it again). A replay is checked by opening
the store again, as the owner will: the cursor it resumes from is the one printed. A Redis
store's cursors are shared: its repairs apply at once, fleet-wide, with every process
running.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import evstate
from evstate import Follower, Store
from evstate.cli.common import (
    UsageError,
    add_json_option,
    parse_revision,
    print_json,
)
from evstate.cli.target import (
    Target,
    add_store_options,
    check_store_directory,
    open_reader,
    open_writer,
    resolve_target,
)
from evstate.errors import InvalidRequestError, StorageError

__all__ = [
    "DESCRIPTION",
    "register",
]

DESCRIPTION = """\
Show trigger status, or repair a trigger.

Without an action: print, as JSON, every trigger the store knows ("owner": the cursor,
lag and parked count the owner resumes from, a server's worker triggers included) and
every follower trigger ("followers": cursor files under STORE/followers, or --cursor-dir).
With NAME, only that trigger; with --parked, its parked events (dead letters). Status
reads without the writer lock.

Actions (they need NAME):
  --replay-from REVISION  move the cursor so that delivery continues at REVISION: the
                          process that runs the trigger delivers every event from there
                          again when it next runs (re-running a handler on parked events
                          needs the handler itself: Store.replay_parked in that process).
  --drop-parked [REV]     forget the parked events (all, or the one of revision REV).
For the owner's triggers of a store directory both need the writer lock: stop the owner
(e.g. evstate serve), repair, start it again; a worker trigger resumes from the moved
cursor when its worker registers it again. With --follower they act on a follower
trigger's cursor file, which must not be running. A Redis store's triggers (a --config
naming the redis adapter) are repaired at once, while every process runs.
"""


def _repair_hint(args: argparse.Namespace, target: Target) -> str:
    return (
        "repairing the owner's triggers needs the writer lock: stop that process (e.g. "
        "evstate serve), run this again, then start it; a worker's trigger resumes from the "
        "moved cursor when the worker registers it again"
    )


def _cursor_dir(args: argparse.Namespace, target: Target) -> str:
    assert target.directory is not None
    return os.path.abspath(args.cursor_dir or os.path.join(target.directory, "followers"))


def _follower_triggers(args: argparse.Namespace, target: Target) -> Follower:
    """The store as a follower whose triggers are the cursor files of ``--cursor-dir``."""
    assert target.directory is not None
    check_store_directory(target.directory)
    return evstate.follow(target.directory, live=False, cursor_dir=_cursor_dir(args, target))


def _owner_status(reader: Follower | Store) -> dict[str, dict[str, Any]]:
    """Cursor, lag and parked count of the owner's triggers (a Redis store's: all of them)."""
    if isinstance(reader, Follower):
        return reader.owner_triggers()
    return {
        name: {"cursor": entry["cursor"], "lag": entry["lag"], "parked": entry["parked"]}
        for name, entry in reader.trigger_status().items()
    }


def _owner_parked(reader: Follower | Store, name: str) -> list[dict[str, Any]]:
    if isinstance(reader, Follower):
        return reader.owner_parked(name)
    return reader.parked_events(name)


def _follower_status(args: argparse.Namespace, target: Target) -> dict[str, dict[str, Any]]:
    if target.is_redis:
        return {}
    with _follower_triggers(args, target) as cursors:
        return {
            name: {"cursor": entry["cursor"], "lag": entry["lag"], "parked": entry["parked"]}
            for name, entry in cursors.trigger_status().items()
        }


def _status(args: argparse.Namespace, target: Target) -> int:
    with open_reader(args, target=target) as reader:
        head = reader.revision
        owner = _owner_status(reader)
        followers = _follower_status(args, target)
        if args.name is None:
            print_json({"revision": head, "owner": owner, "followers": followers}, args)
            return 0
        table = followers if args.follower else owner
        if args.name not in table:
            kind = "follower trigger" if args.follower else "trigger"
            where = reader.path or "the Redis store"
            raise InvalidRequestError(f"no {kind} named {args.name!r} in {where}")
        if args.parked:
            if args.follower:
                with _follower_triggers(args, target) as cursors:
                    parked = cursors.parked_events(args.name)
            else:
                parked = _owner_parked(reader, args.name)
            print_json(parked, args)
        else:
            print_json({"name": args.name, "revision": head, **table[args.name]}, args)
    return 0


def _replay(args: argparse.Namespace, target: Target) -> int:
    revision: int = args.replay_from
    if revision < 1:
        raise UsageError("--replay-from takes a revision >= 1")
    if args.follower:
        with _follower_triggers(args, target) as cursors:
            cursors.replay_trigger(args.name, revision)
            cursor = cursors.trigger_status()[args.name]["cursor"]
        print_json({"name": args.name, "cursor": cursor}, args)
        return 0
    options: dict[str, Any] = {"create": False, "lock_hint": _repair_hint, "target": target}
    with open_writer(args, triggers_enabled=False, **options) as store:
        store.replay_trigger(args.name, revision)
        moved = store.trigger_status()[args.name]["cursor"]
    if not target.is_redis:
        # The owner resumes from its cursor file, snapshots and batch records, honouring a
        # later replay: open the store again as it will, and report what it resumes from.
        with open_writer(args, triggers_enabled=False, **options) as store:
            resumed = store.trigger_status()[args.name]["cursor"]
        if resumed != moved:
            raise StorageError(
                f"the cursor of {args.name!r} was set to {moved}, but the store opens with "
                f"it at {resumed}: the replay did not take effect"
            )
    print_json({"name": args.name, "cursor": moved}, args)
    return 0


def _drop(args: argparse.Namespace, target: Target) -> int:
    revision = None if args.drop_parked == "all" else int(args.drop_parked)
    if args.follower:
        with _follower_triggers(args, target) as cursors:
            dropped = cursors.drop_parked(args.name, revision)
    else:
        options: dict[str, Any] = {"create": False, "lock_hint": _repair_hint, "target": target}
        with open_writer(args, triggers_enabled=False, **options) as store:
            dropped = store.drop_parked(args.name, revision)
    print_json({"name": args.name, "dropped": dropped}, args)
    return 0


def _run(args: argparse.Namespace) -> int:
    actions = [args.replay_from is not None, args.drop_parked is not None, args.parked]
    if sum(actions) > 1:
        raise UsageError("give one of --replay-from, --drop-parked, --parked")
    if any(actions) and args.name is None:
        raise UsageError("--replay-from, --drop-parked and --parked need a trigger NAME")
    target = resolve_target(args)
    if target.is_redis and (args.follower or args.cursor_dir):
        raise UsageError(
            "--follower and --cursor-dir are for a store directory's follower triggers; "
            "every trigger of a Redis store is the store's own"
        )
    if args.replay_from is not None:
        return _replay(args, target)
    if args.drop_parked is not None:
        if args.drop_parked != "all":
            try:
                parse_revision(args.drop_parked)
            except argparse.ArgumentTypeError as exc:
                raise UsageError(f"--drop-parked: {exc}") from None
        return _drop(args, target)
    return _status(args, target)


def register(sub: Any) -> None:
    """Add ``triggers`` to the ``evstate`` subparsers ``sub``."""
    cmd = sub.add_parser(
        "triggers",
        help="trigger status (cursor, lag, parked); move a cursor back; drop parked events",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store_options(cmd)
    cmd.add_argument("name", metavar="NAME", nargs="?", help="one trigger")
    cmd.add_argument("--parked", action="store_true", help="print NAME's parked events")
    cmd.add_argument(
        "--replay-from",
        type=parse_revision,
        metavar="REVISION",
        help="move NAME's cursor so delivery continues at REVISION",
    )
    cmd.add_argument(
        "--drop-parked",
        nargs="?",
        const="all",
        metavar="REVISION",
        help="forget NAME's parked events (all, or one revision)",
    )
    cmd.add_argument(
        "--follower", action="store_true", help="NAME is a follower trigger (a cursor file)"
    )
    cmd.add_argument(
        "--cursor-dir", metavar="DIR", help="follower cursor files (default STORE/followers)"
    )
    add_json_option(cmd)
    cmd.set_defaults(handler=_run)
