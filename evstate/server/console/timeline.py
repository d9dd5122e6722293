"""A key's history as the key page shows it: events, newest first, each with its diff.

Every event carries the value before it (``old_value``) and after it (``new_value``), so
each diff is computed from the event alone: a line diff of the two values as indented JSON
with sorted object keys (so that members written in another order are not a change),
by :mod:`difflib`, with two lines of context. Values too large to diff quickly are
summarized instead of diffed.

Only the entries on screen are diffed: a key with 10,000 events shows
:data:`TIMELINE_PAGE` of them, and the page links to the older ones.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

from evstate.events import Event
from evstate.server.console.reading import format_time

__all__ = ["TIMELINE_PAGE", "DiffLine", "TimelineEntry", "diff_lines", "timeline"]

TIMELINE_PAGE = 50
"""Events shown per key page."""

_DIFF_LIMIT = 200_000  # characters of JSON per side beyond which a diff is not computed
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class DiffLine:
    """One line of a diff.

    ``kind`` is ``"+"`` (added), ``"-"`` (removed), ``" "`` (context) or ``"@"`` (a gap
    between hunks, or a note instead of a diff).
    """

    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One event of the key's history, ready to show.

    ``index`` is its position in the whole history (0 = the oldest); ``after_moment`` marks
    events after the past state being viewed (``?at=``).
    """

    index: int
    revision: int
    time: str
    timestamp: int
    event_type: str
    reason: str | None
    diff: list[DiffLine]
    after_moment: bool


def _json_lines(value: Any) -> list[str]:
    if value is _MISSING:
        return []
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def diff_lines(old: Any, new: Any) -> list[DiffLine]:
    """The line diff from ``old`` to ``new`` (either may be :data:`_MISSING`: absent)."""
    before, after = _json_lines(old), _json_lines(new)
    size = sum(map(len, before)) + sum(map(len, after))
    if size > 2 * _DIFF_LIMIT:
        return [
            DiffLine("@", f"values too large to diff here ({size:,} characters of JSON)"),
        ]
    if not before or not after:  # created or deleted: the whole value, as it came or went
        kind = "+" if after else "-"
        return [DiffLine(kind, line) for line in (after or before)]
    lines: list[DiffLine] = []
    for raw in difflib.unified_diff(before, after, n=2, lineterm=""):
        if raw.startswith(("---", "+++")):
            continue
        if raw.startswith("@@"):
            if lines:
                lines.append(DiffLine("@", "\u22ef"))
            continue
        lines.append(DiffLine(raw[:1], raw[1:]))
    return lines or [DiffLine(" ", "(no change to the value)")]


def timeline(
    events: list[Event], *, skip: int = 0, moment_revision: int | None = None
) -> list[TimelineEntry]:
    """Entries for the events of one key (``events`` oldest first, as ``history()`` gives).

    Newest first, skipping the ``skip`` newest, at most :data:`TIMELINE_PAGE` entries.
    """
    newest = len(events) - 1 - skip
    oldest = max(0, newest - TIMELINE_PAGE + 1)
    entries = []
    for index in range(newest, oldest - 1, -1):
        event = events[index]
        existed = event.event_type != "created"
        old = event.old_value if existed else _MISSING
        new = event.new_value if event.event_type != "deleted" else _MISSING
        entries.append(
            TimelineEntry(
                index=index,
                revision=event.revision,
                time=format_time(event.timestamp),
                timestamp=event.timestamp,
                event_type=event.event_type,
                reason=event.reason,
                diff=diff_lines(old, new),
                after_moment=moment_revision is not None and event.revision > moment_revision,
            )
        )
    return entries
