"""History of a redis store: the event stream, snapshots in Redis, retention, checks.

The stream ``evstate:log`` holds every retained event with entry ID ``<revision>-0``; the
meta hash holds the head ``revision`` and the ``horizon`` (the oldest revision whose state
can be rebuilt; entries at or below it are trimmed). Snapshots are stored in Redis
(``evstate:snap*``, see :mod:`evstate.backends.redis.scripts`) and are built by *replay*, never by
reading the live hashes, so a snapshot is exactly the state at its revision however many
writers are running. Snapshots, compaction and :meth:`RedisTimeline.verify` run under the
maintenance lock, so one process at a time does them.

State maps here are ``scope -> key -> JSON text`` (bytes), as stored in the hashes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from evstate.backends.redis.client import (
    Backend,
    StreamEntry,
    decode_name,
    parse_entry,
    text_with_deadline,
    to_record,
)
from evstate.backends.redis.scripts import (
    LOG,
    MAINTENANCE_LOCK,
    META,
    SNAPSHOTS,
    STATE_PREFIX,
    TTL,
    chunk_key,
    snapshot_key,
    ttl_member,
)
from evstate.backends.redis.snapshots import (
    CHUNK_KEYS,
    Texts,
    apply_entry,
    read_snapshot,
    to_scopes,
    write_snapshot,
)
from evstate.core.log_source import Progress
from evstate.core.replay import Scopes, compare_replays
from evstate.errors import CorruptionError, HistoryCompactedError, StorageError
from evstate.events import EventRecord

__all__ = [
    "CHUNK_KEYS",
    "LOCK_TTL_MS",
    "PAGE",
    "RedisTimeline",
    "Texts",
    "apply_entry",
    "to_scopes",
]

PAGE = 1000  # stream entries per XRANGE
LOCK_TTL_MS = 300_000


def _compacted(revision: int, horizon: int) -> HistoryCompactedError:
    return HistoryCompactedError(
        f"revision {revision} is before the retention horizon (revision {horizon})",
        horizon=horizon,
    )


class RedisTimeline:
    """Reads and maintains the history kept in Redis.

    The redis store's :class:`~evstate.core.log_source.LogSource`: stream entries (JSON
    texts) become :class:`~evstate.events.EventRecord` at this edge (:meth:`scan`,
    :meth:`key_records`, :meth:`state_at`); snapshots and compaction work on the texts.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._token = uuid.uuid4().hex

    # ---- meta -------------------------------------------------------------------------

    def meta(self) -> dict[str, int]:
        """``revision``, ``timestamp`` and ``horizon`` (0 when absent)."""
        raw = self.backend.run(
            "read meta", lambda c: c.hmget(META, "revision", "timestamp", "horizon")
        )
        return {
            name: int(value or 0)
            for name, value in zip(("revision", "timestamp", "horizon"), raw, strict=True)
        }

    def head(self) -> int:
        """The newest revision of the whole fleet."""
        return int(self.backend.run("read revision", lambda c: c.hget(META, "revision")) or 0)

    def horizon(self) -> int:
        """The oldest revision whose state :meth:`state_at` can rebuild."""
        return int(self.backend.run("read horizon", lambda c: c.hget(META, "horizon")) or 0)

    def oldest_revision(self) -> int:
        """The oldest revision whose event is still in the stream."""
        return self.horizon() + 1

    # ---- events -----------------------------------------------------------------------

    def entries(self, low: int, high: int, *, strict: bool = True) -> Iterator[StreamEntry]:
        """Stream entries with revisions in ``[low, high]``, oldest first, a page at a time.

        With ``strict``, a missing revision (trimmed by compaction while this reads) raises
        :class:`HistoryCompactedError` instead of being skipped.
        """
        start = expected = max(low, 1)
        while start <= high:

            def read(c: Any, first: int = start) -> list[Any]:
                return list(c.xrange(LOG, f"{first}-0", f"{high}-0", count=PAGE))

            page = self.backend.run("read events", read)
            if not page:
                return
            for entry_id, fields in page:
                entry = parse_entry(entry_id, fields)
                if strict and entry.revision != expected:
                    raise HistoryCompactedError(
                        f"revision {expected} was compacted while being read",
                        horizon=self.oldest_revision(),
                    )
                expected = entry.revision + 1
                yield entry
            start = expected

    def entry(self, revision: int) -> StreamEntry | None:
        """The entry of ``revision``, or ``None`` if it is not in the stream."""
        found = list(self.entries(revision, revision))
        return found[0] if found else None

    def key_entries(self, scope: str, key: str, low: int, high: int) -> list[StreamEntry]:
        """Entries of one key in ``[low, high]`` (a filtered scan of the retained stream)."""
        return [e for e in self.entries(low, high) if e.scope == scope and e.key == key]

    def scan(self, low: int, high: int, progress: Progress | None = None) -> Iterator[EventRecord]:
        """Records with revisions in ``[low, high]`` (a page of entries at a time)."""
        for entry in self.entries(low, high):
            yield to_record(entry)

    def key_records(self, scope: str, key: str, low: int, high: int) -> list[EventRecord]:
        """Records of one key in ``[low, high]`` (a filtered scan of the retained stream)."""
        return [to_record(e) for e in self.key_entries(scope, key, low, high)]

    def horizon_timestamp(self) -> int | None:
        """Time (ms) of the event at the horizon (its snapshot's); None when it is 0."""
        horizon = self.horizon()
        if horizon == 0:
            return None
        raw = self.backend.run(
            "read snapshot", lambda c: c.hget(snapshot_key(horizon), "timestamp")
        )
        return int(raw) if raw is not None else None

    def _bisect(self, ms: int, low: int, high: int, mode: str) -> int:
        for _ in range(5):
            found = int(self.backend.script("bisect", [LOG], [low, high, ms, mode], "find time"))
            if found >= 0:
                return found
            low = max(low, self.oldest_revision())  # compacted meanwhile: search what is left
        raise StorageError("the event stream kept changing under a time search")

    def first_revision_from_time(self, ms: int, head: int) -> int:
        """The oldest revision at or after time ``ms`` (``head + 1`` if none)."""
        return self._bisect(ms, self.oldest_revision(), head, "first_from")

    def revision_at_time(self, ms: int, head: int) -> int:
        """The newest revision at or before time ``ms`` (the horizon if none)."""
        return self._bisect(ms, self.oldest_revision(), head, "last_at")

    # ---- snapshots --------------------------------------------------------------------

    def snapshot_revisions(self) -> list[int]:
        """Revisions of the committed snapshots, oldest first."""
        members = self.backend.run("list snapshots", lambda c: c.zrange(SNAPSHOTS, 0, -1))
        return sorted(int(m) for m in members)

    def read_snapshot(self, revision: int) -> Texts:
        """The state held by the snapshot at ``revision`` (see :func:`read_snapshot`)."""
        return read_snapshot(self.backend, revision, self.horizon)

    def write_snapshot(self, revision: int, timestamp: int, state: Texts) -> int:
        """Store ``state`` as the snapshot of ``revision`` (maintenance lock held)."""
        return write_snapshot(self.backend, revision, timestamp, state)

    def _delete_snapshot(self, revision: int) -> None:
        def drop(c: Any) -> None:
            chunks = int(c.hget(snapshot_key(revision), "chunks") or 0)
            pipe = c.pipeline(transaction=True)
            pipe.zrem(SNAPSHOTS, str(revision))
            pipe.delete(snapshot_key(revision), *[chunk_key(revision, i) for i in range(chunks)])
            pipe.execute()

        self.backend.run("delete snapshot", drop)

    @contextmanager
    def maintenance(self, wait: float = 30.0) -> Iterator[None]:
        """Hold the fleet-wide maintenance lock (snapshots, compaction, verify).

        Raises:
            StorageError: another process held it for ``wait`` seconds.
        """
        deadline = time.monotonic() + wait
        args = [self._token, LOCK_TTL_MS, "acquire"]
        while not self.backend.script("lock", [MAINTENANCE_LOCK], args, "take the lock"):
            if time.monotonic() > deadline:
                raise StorageError(
                    "another process holds the maintenance lock (evstate:maintenance)"
                )
            time.sleep(0.05)
        try:
            yield
        finally:
            self.backend.script("lock", [MAINTENANCE_LOCK], [self._token, 0, "release"])

    # ---- state at a revision ----------------------------------------------------------

    def state_at(
        self, revision: int, progress: Progress | None = None
    ) -> tuple[Scopes, int | None]:
        """The state as of ``revision`` (encoded values) and the time of its event.

        Raises:
            HistoryCompactedError: ``revision`` is before the horizon (or became so).
        """
        texts, stamp = self._texts_at(revision)
        return to_scopes(texts), (stamp if revision else None)

    def texts_at(self, revision: int) -> Texts:
        """The state as of ``revision`` as stored JSON texts (see :meth:`state_at`)."""
        return self._texts_at(revision)[0]

    def _texts_at(self, revision: int) -> tuple[Texts, int | None]:
        """The state as of ``revision``: the newest snapshot at or before it, plus replay.

        Raises:
            HistoryCompactedError: ``revision`` is before the horizon (or became so).
        """
        horizon = self.horizon()
        if revision < horizon:
            raise _compacted(revision, horizon)
        bases = [r for r in self.snapshot_revisions() if r <= revision]
        stamp: int | None = None
        if bases:
            base, state = bases[-1], self.read_snapshot(bases[-1])
            raw = self.backend.run(
                "read snapshot", lambda c: c.hget(snapshot_key(base), "timestamp")
            )
            stamp = int(raw) if raw is not None else None
        elif horizon == 0:
            base, state = 0, {}
        else:
            raise HistoryCompactedError(
                f"no snapshot at or before revision {revision}", horizon=horizon
            )
        expected = base + 1
        for entry in self.entries(base + 1, revision):
            apply_entry(state, entry)
            stamp = entry.timestamp
            expected += 1
        if expected <= revision:  # the stream ends early: trimmed meanwhile
            raise _compacted(expected, self.horizon())
        return state, stamp

    def snapshot(self) -> int:
        """Snapshot the state at the current head (built by replay); returns its revision."""
        with self.maintenance():
            head = self.head()
            existing = self.snapshot_revisions()
            if head == 0 or (existing and existing[-1] >= head):
                return head
            self._snapshot_at(head)
            return head

    def _snapshot_at(self, revision: int) -> None:
        state, stamp = self._texts_at(revision)
        self.write_snapshot(revision, stamp or 0, state)

    # ---- retention --------------------------------------------------------------------

    def compact(self, cutoff: int, slack: int, wait: float = 30.0) -> dict[str, Any]:
        """Make the horizon ``cutoff`` (or the newest snapshot at or before it).

        A new snapshot at ``cutoff`` is written when the newest usable one is ``slack`` or
        more revisions older. Then the stream entries at or below the new horizon and the
        older snapshots are deleted; the horizon only moves forward. Waits up to ``wait``
        seconds for the maintenance lock.
        """
        with self.maintenance(wait):
            horizon = self.horizon()
            result: dict[str, Any] = {"base": None, "segments_deleted": 0, "events_deleted": 0}
            result["snapshots_deleted"] = 0
            if cutoff <= horizon:
                return result
            snaps = self.snapshot_revisions()
            base = max([r for r in snaps if r <= cutoff] + [horizon])
            if cutoff - base >= slack:
                self._snapshot_at(cutoff)
                base = cutoff
                snaps.append(cutoff)
            if base <= horizon:
                return result
            new_horizon, removed = self.backend.script("trim", [META, LOG], [base], "trim")
            result.update(base=int(new_horizon), events_deleted=int(removed))
            for revision in snaps:
                if revision < base:
                    self._delete_snapshot(revision)
                    result["snapshots_deleted"] += 1
            self._drop_orphan_chunks()
            return result

    def _drop_orphan_chunks(self) -> None:
        """Delete chunks of snapshots never committed (a process died while writing one).

        Only the holder of the maintenance lock writes snapshots, and it holds it now.
        """
        committed = {str(r).encode() for r in self.snapshot_revisions()}

        def clean(c: Any) -> None:
            orphans = [
                key
                for key in c.scan_iter(match=b"evstate:snapchunk:*", count=1000)
                if key.split(b":")[2] not in committed
            ]
            if orphans:
                c.delete(*orphans)

        self.backend.run("drop unfinished snapshots", clean)

    # ---- checks and numbers -----------------------------------------------------------

    def live_state(self) -> tuple[int, Texts]:
        """The head revision and every ``state:*`` hash, read in one atomic step."""
        raw = self.backend.script("live_state", [META, TTL], [], "read the whole state")
        deadlines = {raw[-1][j]: int(float(raw[-1][j + 1])) for j in range(0, len(raw[-1]), 2)}
        state: Texts = {}
        for i in range(1, len(raw) - 1, 2):
            scope = decode_name(raw[i][len(STATE_PREFIX) :])
            pairs = raw[i + 1]
            state[scope] = {
                decode_name(pairs[j]): text_with_deadline(
                    pairs[j + 1], deadlines.get(ttl_member(scope, decode_name(pairs[j])))
                )
                for j in range(0, len(pairs), 2)
            }
        return int(raw[0]), state

    def verify(self, head: int, live: Scopes, progress: Progress | None = None) -> list[str]:
        """Check the stream up to ``head``, every snapshot, and replays against ``live``.

        Runs under the maintenance lock, so no compaction runs meanwhile.
        """
        problems: list[str] = []
        with self.maintenance():
            horizon = self.horizon()
            expected, last_ts = horizon + 1, 0
            for entry in self.entries(horizon + 1, head, strict=False):
                if entry.revision != expected:
                    problems.append(f"revision gap: expected {expected}, found {entry.revision}")
                if entry.timestamp < last_ts:
                    problems.append(f"revision {entry.revision}: timestamp goes backwards")
                if entry.event_type == "created" and entry.old is not None:
                    problems.append(f"revision {entry.revision}: created, but has an old value")
                if entry.event_type == "updated" and entry.old is None:
                    problems.append(f"revision {entry.revision}: updated, but has no old value")
                if (entry.new is None) != (entry.event_type == "deleted"):
                    problems.append(f"revision {entry.revision}: new value and type disagree")
                expected, last_ts = entry.revision + 1, entry.timestamp
            if expected != head + 1:
                problems.append(f"the stream ends at revision {expected - 1}, the head is {head}")
            starts: list[tuple[int, Scopes]] = []
            snaps = [r for r in self.snapshot_revisions() if r <= head]
            if horizon == 0 and 0 not in snaps:
                starts.append((0, {}))
            for revision in snaps:
                try:
                    starts.append((revision, to_scopes(self.read_snapshot(revision))))
                except (CorruptionError, HistoryCompactedError) as exc:
                    problems.append(f"bad snapshot: {exc}")
            if problems:
                return problems
            return compare_replays(starts, head, live, self.scan)

    def stats(self) -> dict[str, Any]:
        """Sizes and counts of what the store keeps in Redis, and the retained range."""
        meta = self.meta()
        snaps = self.snapshot_revisions()

        def sizes(c: Any) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            pipe.xlen(LOG)
            pipe.memory_usage(LOG)
            pipe.xrange(LOG, f"{meta['horizon'] + 1}-0", "+", count=1)
            for revision in snaps:
                pipe.hget(snapshot_key(revision), "bytes")
            return list(pipe.execute())

        length, log_bytes, first, *snap_bytes = self.backend.run("read stats", sizes)
        return {
            "segments": 0,
            "log_bytes": int(log_bytes or 0),
            "events_in_log": int(length),
            "snapshots": len(snaps),
            "snapshot_bytes": sum(int(b or 0) for b in snap_bytes),
            "last_snapshot_revision": snaps[-1] if snaps else None,
            "oldest_revision": meta["horizon"] + 1,
            "oldest_timestamp": parse_entry(*first[0]).timestamp if first else None,
            "horizon_revision": meta["horizon"],
            "index_built": True,
        }
