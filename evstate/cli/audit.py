"""``evstate log / tail / history``: the audit trail, JSON lines or a table.

These read the log itself, which no server function serves: they read the store's files
(a follower: no writer lock, so they work while a server or service owns the directory)
or, with a config naming the redis adapter, the Redis store. ``tail -f`` follows new
events live (a follower sees each write within milliseconds; Redis is polled) until
Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from evstate import Follower, Store
from evstate.cli.common import (
    ProgressBar,
    format_ms,
    parse_revision,
    parse_time,
    warn,
)
from evstate.cli.hints import warn_if_unknown_scope
from evstate.cli.target import add_store_options, open_reader
from evstate.errors import HistoryCompactedError
from evstate.events import Event

__all__ = [
    "NO_LOCK",
    "POLL_INTERVAL",
    "TIMES",
    "format_table",
    "register",
]

NO_LOCK = (
    "Reads the store's files without the writer lock (works while another process, e.g. "
    "evstate serve, owns the store), or the Redis store a --config names."
)
POLL_INTERVAL = 0.2  # seconds between reads of Redis's log head for tail -f
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


def _emit(events: Iterable[Event], as_json: bool) -> int:
    """Print ``events`` (JSON lines, or a table); returns how many were printed."""
    count = 0

    def counted() -> Iterator[Event]:
        nonlocal count
        for event in events:
            count += 1
            yield event

    if as_json:
        for event in counted():
            print(json.dumps(event.to_dict(), ensure_ascii=False), flush=True)
    else:
        for line in format_table(counted(), width=_width()):
            print(line, flush=True)
    return count


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
    with open_reader(args) as reader:
        # Streamed: one segment in memory at a time, however long the log (the output is
        # the progress here).
        events = reader.events(start, end, scope=args.scope, key=args.key)
        if not _emit(_limited(events, args.limit), args.json) and args.scope is not None:
            warn_if_unknown_scope(args.scope, reader.list_groups)
    return 0


def _limited(events: Iterable[Event], limit: int | None) -> Iterable[Event]:
    for n, event in enumerate(events):
        if limit is not None and n >= limit:
            return
        yield event


def _history(args: argparse.Namespace) -> int:
    start, end = _bounds(args)
    with open_reader(args) as reader:
        events = reader.history(
            args.scope_arg, args.key_arg, since=start, until=end, limit=args.limit
        )
        if not _emit(events, args.json):
            warn_if_unknown_scope(args.scope_arg, reader.list_groups)
    return 0


def _tail(args: argparse.Namespace) -> int:
    with open_reader(args, live=args.follow) as reader:
        head = reader.revision
        if args.lines > 0:
            if args.scope is None and args.key is None:
                first = max(head - args.lines + 1, 1)
                try:
                    recent: Iterable[Event] = list(reader.events(first, head))
                except HistoryCompactedError as exc:  # fewer events are retained than asked
                    recent = list(reader.events(exc.horizon, head))
            else:
                with ProgressBar("reading the log") as bar:
                    recent = collections.deque(
                        reader.events(None, head, scope=args.scope, key=args.key, progress=bar),
                        maxlen=args.lines,
                    )
            events = list(recent)
        else:
            events = []
        if not _emit(events, args.json) and args.scope is not None and not args.follow:
            warn_if_unknown_scope(args.scope, reader.list_groups)
        if not args.follow:
            return 0
        try:
            return _follow(reader, head + 1, args)
        except KeyboardInterrupt:  # Ctrl-C is how -f ends
            return 0


def _new_events(
    reader: Follower | Store, position: int, args: argparse.Namespace
) -> Iterator[Event]:
    """The events from ``position`` on, as they are written (ends when a follower closes)."""
    if isinstance(reader, Follower):
        yield from reader.tail(position, scope=args.scope, key=args.key)
        return
    while True:  # Redis: poll the head, read what is new
        head = reader.revision
        if head >= position:
            yield from reader.events(position, head, scope=args.scope, key=args.key)
            position = head + 1
        time.sleep(POLL_INTERVAL)


def _follow(reader: Follower | Store, position: int, args: argparse.Namespace) -> int:
    while True:
        try:
            for event in _new_events(reader, position, args):
                position = event.revision + 1
                if args.json:
                    print(json.dumps(event.to_dict(), ensure_ascii=False), flush=True)
                else:
                    for line in list(format_table([event], width=_width()))[1:]:
                        print(line, flush=True)
            return 0  # the follower was closed
        except HistoryCompactedError as exc:
            warn(
                f"events from revision {position} were compacted by the owner before they "
                f"could be read; continuing at revision {exc.horizon}"
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
    cmd.add_argument("--json", action="store_true", help="JSON lines: one event object a line")


def register(sub: Any) -> None:
    """Add the audit commands to the ``evstate`` subparsers ``sub``."""
    cmd = sub.add_parser(
        "log",
        help="print the events of the retained log (a table, or JSON lines)",
        description=(
            "Print the events of the retained log, oldest first, as a table (revision, time, "
            "type, scope/key, old -> new) or, with --json, JSON lines (one event object a "
            f"line). {TIMES} {NO_LOCK}"
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
            "Print the last N events (a table, or JSON lines with --json); with -f, keep "
            "printing new events as they are written, until Ctrl-C. A live follower: it works "
            f"while a server owns the store and sees each write within milliseconds. {NO_LOCK}"
        ),
    )
    add_store_options(cmd)
    cmd.add_argument("-f", "--follow", action="store_true", help="follow new events live")
    cmd.add_argument(
        "-n", "--lines", type=int, default=10, metavar="N", help="print the last N (default 10)"
    )
    cmd.add_argument("--scope", help="only events of this scope")
    cmd.add_argument("--key", help="only events of this key")
    cmd.add_argument("--json", action="store_true", help="JSON lines: one event object a line")
    cmd.set_defaults(handler=_tail)

    cmd = sub.add_parser(
        "history",
        help="print the events of SCOPE/KEY, oldest first",
        description=(
            "Print the retained events of one key, oldest first, with old and new values (a "
            f"table, or JSON lines with --json). {TIMES} {NO_LOCK}"
        ),
    )
    add_store_options(cmd)
    cmd.add_argument("scope_arg", metavar="SCOPE")
    cmd.add_argument("key_arg", metavar="KEY")
    _range_options(cmd)
    cmd.set_defaults(handler=_history)
