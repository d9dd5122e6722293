"""``evstate log / tail / history``: the audit trail, read through a follower.

None of these takes the writer lock: they read the owner's files, so they work while a
server or service owns the store. ``tail -f`` is a live follower: it prints each event
within milliseconds of the owner writing it, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from evstate import Follower
from evstate.cli.common import (
    ProgressBar,
    add_store_options,
    format_ms,
    open_follower,
    parse_revision,
    parse_time,
)
from evstate.errors import HistoryCompactedError
from evstate.events import Event

__all__ = [
    "NO_LOCK",
    "TIMES",
    "format_table",
    "register",
]

NO_LOCK = "Reads without the writer lock (works while another process owns the store)."
TIMES = (
    "TIME is ISO 8601 (2026-11-28T21:07:03Z; without an offset it is local time) or Unix seconds."
)


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def format_table(events: Iterable[Event], *, width: int | None = None) -> Iterable[str]:
    """Events as readable lines: revision, time (UTC), type, scope/key, old -> new.

    ``width`` cuts each line to that many characters (a terminal's width); None keeps
    lines whole (piped output).
    """
    yield f"{'REVISION':>8}  {'TIME (UTC)':<24}  {'TYPE':<7}  SCOPE/KEY  CHANGE"
    for event in events:
        change = (
            _value(event.new_value)
            if event.event_type == "created"
            else f"{_value(event.old_value)} -> "
            + ("(deleted)" if event.event_type == "deleted" else _value(event.new_value))
        )
        line = (
            f"{event.revision:>8}  {format_ms(event.timestamp):<24}  {event.event_type:<7}  "
            f"{event.scope}/{event.key}  {change}"
        )
        if width is not None and len(line) > width:
            line = line[: max(width - 3, 0)] + "..."
        yield line


def _width() -> int | None:
    """The terminal's width when stdout is one (lines are cut to it), else None."""
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def _emit(events: Iterable[Event], as_json: bool) -> None:
    if as_json:
        for event in events:
            print(json.dumps(event.to_dict(), ensure_ascii=False), flush=True)
        return
    for line in format_table(events, width=_width()):
        print(line, flush=True)


def _bounds(args: argparse.Namespace) -> tuple[int | datetime | None, int | datetime | None]:
    start: int | datetime | None = args.start
    end: int | datetime | None = args.end
    if args.since is not None:
        start = parse_time(args.since)
    if args.until is not None:
        end = parse_time(args.until)
    return start, end


def _log(args: argparse.Namespace) -> int:
    start, end = _bounds(args)
    with open_follower(args) as follower:
        # Streamed: one segment in memory at a time, however long the log (the output is
        # the progress here).
        events = follower.events(start, end, scope=args.scope, key=args.key)
        _emit(_limited(events, args.limit), args.json)
    return 0


def _limited(events: Iterable[Event], limit: int | None) -> Iterable[Event]:
    for n, event in enumerate(events):
        if limit is not None and n >= limit:
            return
        yield event


def _history(args: argparse.Namespace) -> int:
    start, end = _bounds(args)
    with open_follower(args) as follower:
        _emit(
            follower.history(
                args.scope_arg, args.key_arg, since=start, until=end, limit=args.limit
            ),
            args.json,
        )
    return 0


def _tail(args: argparse.Namespace) -> int:
    with open_follower(args, live=args.follow) as follower:
        head = follower.revision
        if args.lines > 0:
            if args.scope is None and args.key is None:
                first = max(head - args.lines + 1, 1)
                try:
                    recent: Iterable[Event] = list(follower.events(first, head))
                except HistoryCompactedError as exc:  # fewer events are retained than asked
                    recent = list(follower.events(exc.horizon, head))
            else:
                with ProgressBar("reading the log") as bar:
                    recent = collections.deque(
                        follower.events(None, head, scope=args.scope, key=args.key, progress=bar),
                        maxlen=args.lines,
                    )
            events = list(recent)
        else:
            events = []
        _emit(events, args.json)
        if not args.follow:
            return 0
        try:
            return _follow(follower, head + 1, args)
        except KeyboardInterrupt:  # Ctrl-C is how -f ends
            return 0


def _follow(follower: Follower, position: int, args: argparse.Namespace) -> int:
    while True:
        try:
            stream = follower.tail(position, scope=args.scope, key=args.key)
            for event in stream:
                position = event.revision + 1
                if args.json:
                    print(json.dumps(event.to_dict(), ensure_ascii=False), flush=True)
                else:
                    for line in list(format_table([event], width=_width()))[1:]:
                        print(line, flush=True)
            return 0  # the follower was closed
        except HistoryCompactedError as exc:
            print(
                f"evstate: events from revision {position} were compacted by the owner "
                f"before they could be read; continuing at revision {exc.horizon}",
                file=sys.stderr,
            )
            position = max(exc.horizon, position + 1)


def _range_options(cmd: argparse.ArgumentParser) -> None:
    start = cmd.add_mutually_exclusive_group()
    start.add_argument(
        "--from", dest="start", type=parse_revision, metavar="REVISION", help="first revision"
    )
    start.add_argument("--since", metavar="TIME", help="first time (inclusive)")
    end = cmd.add_mutually_exclusive_group()
    end.add_argument(
        "--to", dest="end", type=parse_revision, metavar="REVISION", help="last revision"
    )
    end.add_argument("--until", metavar="TIME", help="last time (inclusive)")
    cmd.add_argument("--limit", type=int, metavar="N", help="print at most N events")
    cmd.add_argument("--json", action="store_true", help="one JSON object a line")


def register(sub: Any) -> None:
    """Add the audit commands to the ``evstate`` subparsers ``sub``."""
    cmd = sub.add_parser(
        "log",
        help="print the events of the retained log (a table, or JSON lines)",
        description=(
            "Print the events of the retained log, oldest first, as a table (revision, time, "
            "type, scope/key, old -> new) or, with --json, one JSON object a line. "
            f"{TIMES} {NO_LOCK}"
        ),
    )
    add_store_options(cmd)
    _range_options(cmd)
    cmd.add_argument("--scope", help="only events of this scope")
    cmd.add_argument("--key", help="only events of this key")
    cmd.set_defaults(handler=_log)

    cmd = sub.add_parser(
        "tail",
        help="print the newest events; with -f, follow new events live until Ctrl-C",
        description=(
            "Print the last N events; with -f, keep printing new events as the owner writes "
            "them, until Ctrl-C. A live follower: it works while a server owns the store and "
            f"sees each write within milliseconds. {NO_LOCK}"
        ),
    )
    add_store_options(cmd)
    cmd.add_argument("-f", "--follow", action="store_true", help="follow new events live")
    cmd.add_argument(
        "-n", "--lines", type=int, default=10, metavar="N", help="print the last N (default 10)"
    )
    cmd.add_argument("--scope", help="only events of this scope")
    cmd.add_argument("--key", help="only events of this key")
    cmd.add_argument("--json", action="store_true", help="one JSON object a line")
    cmd.set_defaults(handler=_tail)

    cmd = sub.add_parser(
        "history",
        help="print the events of SCOPE/KEY, oldest first",
        description=(
            f"Print the retained events of one key, oldest first, with old and new values. "
            f"{TIMES} {NO_LOCK}"
        ),
    )
    add_store_options(cmd)
    cmd.add_argument("scope_arg", metavar="SCOPE")
    cmd.add_argument("key_arg", metavar="KEY")
    _range_options(cmd)
    cmd.set_defaults(handler=_history)
