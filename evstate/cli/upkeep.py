"""``evstate snapshot / compact``: the owner's upkeep, run by hand.

Both change the store, so they open it as its writer: a file store needs the writer lock
(stop the owner first: ``evstate serve`` snapshots and compacts by itself, per
``save_interval_ms`` and ``retention``) and must exist already; a Redis store (a config
naming the redis adapter) is shared and takes no lock. ``compact`` that reclaimed nothing
says why, under ``"reason"``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from evstate import Store
from evstate.cli.common import ProgressBar, add_json_option, print_json
from evstate.cli.target import add_store_options, open_writer
from evstate.config import retention_limits

__all__ = ["WRITES", "register", "why_nothing_was_reclaimed"]

WRITES = (
    "Needs the writer lock of a store directory that exists (it fails while another "
    "process, e.g. evstate serve, owns it); a Redis store is shared and needs none."
)


def _snapshot(args: argparse.Namespace) -> int:
    with open_writer(args, create=False) as store, ProgressBar("writing a snapshot"):
        print_json({"revision": store.snapshot()}, args)
    return 0


def _policy_text(max_revisions: int | None, max_age_ms: int | None) -> str:
    parts = []
    if max_revisions is not None:
        parts.append(f"the last {max_revisions} revision{'s' if max_revisions != 1 else ''}")
    if max_age_ms is not None:
        parts.append(f"history younger than {max_age_ms // 1000} s")
    return " and only ".join(parts) if parts else "all history (retention: forever)"


def why_nothing_was_reclaimed(store: Store, result: dict[str, Any]) -> str:
    """Why ``compact`` (whose ``result`` deleted nothing) had nothing to delete.

    Checked in order: the retention policy keeps everything retained; the file store's
    log is one segment (the one being written is never deleted); no snapshot covers what
    the policy lets go of (or all are newer than that); else the segments that hold it
    also hold newer revisions.
    """
    stats = store.stats()
    head, horizon = stats["revision"], stats["horizon_revision"]
    max_revisions, max_age_ms = retention_limits(store.config.retention)
    policy = _policy_text(max_revisions, max_age_ms)
    by_count = head - max_revisions if max_revisions is not None else None
    oldest_ms = stats.get("oldest_timestamp")
    young = (
        max_age_ms is not None
        and oldest_ms is not None
        and oldest_ms >= time.time() * 1000 - max_age_ms
    )
    if (max_revisions is None and max_age_ms is None) or (
        (by_count is None or by_count <= horizon) and (max_age_ms is None or young)
    ):
        return (
            f"the retention policy keeps {policy}, which is all the history retained "
            f"(revisions {stats['oldest_revision']} to {head})"
        )
    if stats.get("segments") == 1:
        return (
            "all history is in one log segment, the one being written, which is never "
            f"deleted (a new segment starts after segment_size_bytes = "
            f"{store.config.segment_size_bytes} bytes)"
        )
    if result.get("base") is None:
        newest = stats.get("last_snapshot_revision")
        if not newest:
            return "there is no snapshot to start the log from (run compact without --no-snapshot)"
        cut = f" (revision {by_count})" if by_count is not None and max_age_ms is None else ""
        return (
            "no snapshot is old enough: history is deleted up to a snapshot at or before the "
            f"newest revision the retention policy ({policy}) lets go of{cut}, and the "
            f"snapshots are newer (the newest is of revision {newest}); a compact after more "
            "writes reclaims it"
        )
    return (
        f"the history the retention policy ({policy}) lets go of is in segments that also "
        "hold newer revisions; a segment is deleted only once all of it is older than the "
        "newest snapshot the policy allows"
    )


def _compact(args: argparse.Namespace) -> int:
    retention: dict[str, Any] = {}
    if args.keep_revisions is not None:
        retention["revisions"] = args.keep_revisions
    if args.keep_duration is not None:
        retention["duration"] = args.keep_duration
    options: dict[str, Any] = {"retention": retention} if retention else {}
    with open_writer(args, create=False, **options) as store:
        with ProgressBar("compacting") as bar:
            result: dict[str, Any] = {}
            if not args.no_snapshot:
                bar.phase("writing a snapshot")
                result["snapshot_revision"] = store.snapshot()
                bar.phase("compacting")
            result.update(store.compact())
        reclaimed = result.get("segments_deleted", 0) + result.get("snapshots_deleted", 0)
        if not reclaimed and not result.get("events_deleted"):
            result["reason"] = why_nothing_was_reclaimed(store, result)
    print_json(result, args)
    return 0


def register(sub: Any) -> None:
    """Add ``snapshot`` and ``compact`` to the ``evstate`` subparsers ``sub``."""
    cmd = sub.add_parser(
        "snapshot",
        help="write a snapshot of the current state now",
        description=f"Write a snapshot of the current state now; print its revision. {WRITES}",
    )
    add_store_options(cmd)
    add_json_option(cmd)
    cmd.set_defaults(handler=_snapshot)

    cmd = sub.add_parser(
        "compact",
        help="apply the retention policy now: delete history it no longer keeps",
        description=(
            "Take a snapshot (unless --no-snapshot), then apply the retention policy (the "
            "config's `retention`, default the last 1,000,000 revisions, or the --keep-* "
            "options): delete the segments and snapshots wholly older than the new horizon. "
            'Prints what was deleted; when nothing was, "reason" says why (the policy keeps '
            f"everything, one segment, no snapshot). {WRITES}"
        ),
    )
    add_store_options(cmd)
    cmd.add_argument("--keep-revisions", type=int, metavar="N", help="keep the last N revisions")
    cmd.add_argument(
        "--keep-duration", metavar="AGE", help="keep history younger than AGE (7d, 12h, 30m)"
    )
    cmd.add_argument("--no-snapshot", action="store_true", help="do not take a snapshot first")
    add_json_option(cmd)
    cmd.set_defaults(handler=_compact)
