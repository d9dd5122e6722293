"""``evstate triggers``: trigger status, and the two repairs a shell can make.

Status (cursor, lag, parked) is read without the writer lock, for the owner's triggers and
for follower triggers (cursor files under ``<store>/followers``). Running a parked event's
handler again needs the handler, which only the process that registered the trigger has
(``Store.replay_parked``); from the shell there are the two repairs that need no handler:
``--replay-from REVISION`` moves the cursor back (or forward), so the trigger's process
delivers everything from that revision again when it next runs; ``--drop-parked`` forgets
dead letters.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import evstate
from evstate.cli.common import (
    UsageError,
    add_store_options,
    open_follower,
    open_writer,
    parse_revision,
    print_json,
    store_dir,
)
from evstate.errors import InvalidRequestError, StorageError

__all__ = [
    "DESCRIPTION",
    "register",
]

DESCRIPTION = """\
Show trigger status, or repair a trigger.

Without an action: print, as JSON, every trigger the store knows ("owner": the cursor,
lag and parked count the owner resumes from) and every follower trigger ("followers":
cursor files under STORE/followers, or --cursor-dir). With NAME, only that trigger;
with --parked, its parked events (dead letters). Status reads without the writer lock.

Actions (they need NAME):
  --replay-from REVISION  move the cursor so that delivery continues at REVISION: the
                          process that runs the trigger delivers every event from there
                          again when it next runs (re-running a handler on parked events
                          needs the handler itself: Store.replay_parked in that process).
  --drop-parked [REV]     forget the parked events (all, or the one of revision REV).
For the owner's triggers both need the writer lock (stop the owner first); with
--follower they act on a follower trigger's cursor file, which must not be running.
"""


def _follower_triggers(args: argparse.Namespace) -> evstate.Follower:
    """The store as a follower whose triggers are the cursor files of ``--cursor-dir``."""
    return evstate.follow(store_dir(args), live=False, cursor_dir=_cursor_dir(args))


def _status(args: argparse.Namespace) -> int:
    with open_follower(args) as follower, _follower_triggers(args) as cursors:
        head = follower.revision
        owner = follower.owner_triggers()
        followers = {
            name: {"cursor": entry["cursor"], "lag": entry["lag"], "parked": entry["parked"]}
            for name, entry in cursors.trigger_status().items()
        }
        if args.name is None:
            print_json({"revision": head, "owner": owner, "followers": followers})
            return 0
        table = followers if args.follower else owner
        if args.name not in table:
            kind = "follower trigger" if args.follower else "trigger"
            raise InvalidRequestError(f"no {kind} named {args.name!r} in {follower.path}")
        if args.parked:
            parked = (
                cursors.parked_events(args.name)
                if args.follower
                else follower.owner_parked(args.name)
            )
            print_json(parked)
        else:
            print_json({"name": args.name, "revision": head, **table[args.name]})
    return 0


def _cursor_dir(args: argparse.Namespace) -> str:
    return os.path.abspath(args.cursor_dir or os.path.join(store_dir(args), "followers"))


def _replay(args: argparse.Namespace) -> int:
    revision: int = args.replay_from
    if revision < 1:
        raise UsageError("--replay-from takes a revision >= 1")
    if args.follower:
        with _follower_triggers(args) as cursors:
            cursors.replay_trigger(args.name, revision)
            cursor = cursors.trigger_status()[args.name]["cursor"]
        print_json({"name": args.name, "cursor": cursor})
        return 0
    with open_writer(args, triggers_enabled=False) as store:
        store.replay_trigger(args.name, revision)
        cursor = store.trigger_status()[args.name]["cursor"]
    # The owner resumes from the highest of triggers.cbor, the newest snapshot and the batch
    # records after it: check that the move back is what it will see.
    with open_follower(args) as follower:
        seen = follower.owner_triggers().get(args.name, {}).get("cursor", cursor)
    if seen > cursor:
        raise StorageError(
            f"the cursor of {args.name!r} was set to {cursor}, but the store's newest snapshot "
            f"or batch records hold {seen}, and the owner resumes from the highest; the replay "
            "does not take effect (a store limitation: replay inside the owner's process)"
        )
    print_json({"name": args.name, "cursor": cursor})
    return 0


def _drop(args: argparse.Namespace) -> int:
    revision = None if args.drop_parked == "all" else int(args.drop_parked)
    if args.follower:
        with _follower_triggers(args) as cursors:
            dropped = cursors.drop_parked(args.name, revision)
    else:
        with open_writer(args, triggers_enabled=False) as store:
            dropped = store.drop_parked(args.name, revision)
    print_json({"name": args.name, "dropped": dropped})
    return 0


def _run(args: argparse.Namespace) -> int:
    actions = [args.replay_from is not None, args.drop_parked is not None, args.parked]
    if sum(actions) > 1:
        raise UsageError("give one of --replay-from, --drop-parked, --parked")
    if any(actions) and args.name is None:
        raise UsageError("--replay-from, --drop-parked and --parked need a trigger NAME")
    if args.replay_from is not None:
        return _replay(args)
    if args.drop_parked is not None:
        if args.drop_parked != "all":
            try:
                parse_revision(args.drop_parked)
            except argparse.ArgumentTypeError as exc:
                raise UsageError(f"--drop-parked: {exc}") from None
        return _drop(args)
    return _status(args)


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
    cmd.set_defaults(handler=_run)
