"""What each console page shows: the store calls behind it and the template's context.

Every method runs on a console thread (never the event loop: the store calls may read
files or rebuild a past state) and returns a :class:`Page`, which the site renders with
its template (docs/console.md describes each page). A page's ``live`` mode tells the
browser what to do when the store changes:

- ``refresh``: fetch the page's live part again and swap it in (the present, when that is
  cheap: the scopes, a key, a scope that fits in one page);
- ``notify``: show that the store changed, with a link to list again (a scope of several
  pages: listing it again would pin another copy of it in the store);
- ``tick``: refresh on every stats sample too (triggers: their cursors move without writes);
- ``none``: a past state, which never changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from evstate.core.store import Store
from evstate.errors import HistoryCompactedError
from evstate.server.console.http import BadRequest, HttpRequest
from evstate.server.console.listing import PAGE_SIZE, ScopeLister
from evstate.server.console.reading import (
    Moment,
    PastViews,
    ScopeCounts,
    format_time,
    parse_moment,
    pretty_json,
)
from evstate.server.console.sampler import StatsSampler
from evstate.server.console.timeline import TIMELINE_PAGE, timeline

__all__ = ["PARKED_SHOWN", "Page", "Pages"]

PARKED_SHOWN = 100
"""Parked events listed per trigger on the triggers page."""


@dataclass(slots=True)
class Page:
    """A template to render, its context, the HTTP status, and the live mode."""

    template: str
    context: dict[str, Any] = field(default_factory=dict)
    status: HTTPStatus = HTTPStatus.OK
    live: str = "none"
    unchanged: bool = False  # a live refresh found nothing new (answered with 204)


def _offset(request: HttpRequest, name: str) -> int:
    text = request.query.get(name, "0") or "0"
    if not text.isdigit():
        raise BadRequest(f"?{name}= takes a number")
    return int(text)


class Pages:
    """The console's pages over one store (see the module doc)."""

    def __init__(self, store: Store, sampler: StatsSampler, *, writes: bool) -> None:
        self.store = store
        self.sampler = sampler
        self.writes = writes
        self.views = PastViews(store)
        self.counts = ScopeCounts(store)
        self.lister = ScopeLister(store)

    def _moment(self, request: HttpRequest) -> tuple[Moment | None, dict[str, Any]]:
        """The ``?at=`` moment and the context that describes it."""
        moment = parse_moment(request.query.get("at"))
        return moment, {"moment": moment, "at": moment.text if moment else ""}

    def home(self, request: HttpRequest) -> Page:
        """``/``: the scopes with their key counts."""
        moment, context = self._moment(request)
        if moment is None:
            revision, counts = self.counts.counts()
            context.update(view_revision=revision, view_time=None)
            live = "refresh"
        else:
            view = self.views.view(moment)
            counts = self.views.counts(view)
            context.update(view_revision=view.revision, view_time=format_time(view.timestamp))
            live = "none"
        context.update(scopes=counts, total_keys=sum(n for _, n in counts))
        return Page("home.html", context, live=live)

    def scope(self, request: HttpRequest, scope: str) -> Page:
        """``/scopes/<scope>``: its keys, a page at a time, with the filter."""
        moment, context = self._moment(request)
        needle = request.query.get("q", "")
        cursor = request.query.get("cursor") or None
        if moment is None:
            page = self.lister.present(scope, cursor, needle)
            live = "refresh" if page.done and cursor is None else "notify"
            context.update(view_revision=page.revision, view_time=None)
        else:
            view = self.views.view(moment)
            page = self.lister.past(view, scope, _offset(request, "offset"), needle)
            live = "none"
            context.update(view_revision=view.revision, view_time=format_time(view.timestamp))
        context.update(
            scope=scope,
            page=page,
            q=needle,
            cursor=cursor,
            first_page=cursor is None and page.offset == 0,
            page_size=PAGE_SIZE,
        )
        return Page("scope.html", context, live=live)

    def key(self, request: HttpRequest, scope: str, key: str) -> Page:
        """``/scopes/<scope>/keys/<key>``: the value, its TTL and its history."""
        moment, context = self._moment(request)
        if moment is None and self._unchanged(scope, key, request.header("X-Evstate-Known")):
            return Page("key.html", unchanged=True)
        events = self.store.history(scope, key)
        ttl_ms: int | None = None
        if moment is None:
            value = self.store.get(scope, key)
            ttl_ms = self.store.ttl(scope, key)
            upto = len(events)
            view_revision = self.store.revision
            context.update(view_time=None)
        else:
            view = self.views.view(moment)
            value = view.get(scope, key)
            view_revision = view.revision
            upto = sum(1 for event in events if event.revision <= view_revision)
            context.update(view_time=format_time(view.timestamp))
        shown = events[:upto]
        exists = value is not None or bool(shown and shown[-1].event_type != "deleted")
        skip = _offset(request, "older")
        context.update(
            scope=scope,
            key=key,
            exists=exists,
            value_text=pretty_json(value) if exists else "",
            value_json=json.dumps(value, ensure_ascii=False) if exists else "",
            editor_text=(
                json.dumps(value, indent=2, ensure_ascii=False)
                if self.writes and exists and moment is None
                else ""
            ),
            ttl_ms=ttl_ms,
            view_revision=view_revision,
            event_count=len(events),
            events_then=upto,
            revisions=json.dumps([event.revision for event in events]),
            slider_index=upto - 1,
            slider_revision=events[upto - 1].revision if upto else None,
            entries=timeline(
                events, skip=skip, moment_revision=None if moment is None else view_revision
            ),
            older=skip + TIMELINE_PAGE if skip + TIMELINE_PAGE < len(events) else None,
            newer=max(0, skip - TIMELINE_PAGE) if skip else None,
            known=str(events[-1].revision) if events else "0",
            timeline_page=TIMELINE_PAGE,
        )
        return Page("key.html", context, live="refresh" if moment is None else "none")

    def _unchanged(self, scope: str, key: str, known: str | None) -> bool:
        """Whether a live refresh that has seen up to revision ``known`` is still current.

        Reads only the events after ``known`` (a key with a long history is not read again
        on every write elsewhere in the store).
        """
        if known is None or not known.isdigit() or int(known) < 1:
            return False
        try:
            return not self.store.history(scope, key, since=int(known) + 1)
        except HistoryCompactedError:
            return False

    def triggers(self, request: HttpRequest) -> Page:
        """``/triggers``: every trigger's cursor, lag and parked events."""
        status = self.store.trigger_status()
        rows = []
        for name in sorted(status):
            entry = dict(status[name])
            parked = self.store.parked_events(name)[:PARKED_SHOWN] if entry.get("parked") else []
            entry["name"] = name
            entry["parked_events"] = [
                {
                    "revision": letter["revision"],
                    "event": letter["event"],
                    "error": letter.get("error"),
                    "attempts": letter.get("attempts"),
                    "parked_at": format_time(letter.get("parked_at")),
                }
                for letter in parked
            ]
            rows.append(entry)
        context = {
            "moment": None,
            "at": "",
            "triggers": rows,
            "head": self.store.revision,
            "parked_total": sum(row.get("parked") or 0 for row in rows),
            "parked_shown": PARKED_SHOWN,
            "enabled": self.store.triggers_enabled,
        }
        return Page("triggers.html", context, live="tick")

    def stats(self, request: HttpRequest) -> Page:
        """``/stats``: the numbers, their charts over time, and the recovery notes."""
        stats = self.store.stats()
        context = {
            "moment": None,
            "at": "",
            "stats": stats,
            "samples_json": json.dumps(self.sampler.samples()),
            "notes": list(self.store.recovery_notes),
            "snapshot_age": self.sampler.snapshot_age(),
            "oldest_time": format_time(stats.get("oldest_timestamp")),
        }
        return Page("stats.html", context, live="tick")
