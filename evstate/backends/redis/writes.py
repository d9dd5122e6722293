"""The redis adapter's write path: every state change is one run of the COMMIT script.

``set`` and ``delete`` need no read beforehand: the script reads the old value, writes the
hash, takes the next revision and appends the stream entry in one atomic step.

``update`` keeps ONE implementation of the iii op rules (:func:`evstate.ops.apply_update_ops`)
by optimistic concurrency: read the old JSON text, apply the ops in Python, and commit with a
compare-and-set on that text. If another writer changed the key in between, the script
writes nothing and answers ``conflict``; the update is recomputed from the new value and
tried again. Threads of one process take a per-key lock first, so they never conflict with
each other; only writers in other processes can cause a retry.

Trigger commits (a handler's writes through ``event.store`` plus the cursor move, or a dead
letter) are the same script with more parts, fenced by the trigger's lease.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from evstate.backends.redis.client import (
    Backend,
    dump_value,
    json_to_cbor,
    load_value,
    new_request_id,
    sleep_jitter,
)
from evstate.backends.redis.scripts import (
    LOG,
    META,
    REQUEST_TTL_MS,
    TTL,
    lease_key,
    parked_key,
    request_key,
    state_key,
    trigger_key,
)
from evstate.core.writes import Write, expected_matches, plan_records
from evstate.errors import StorageError
from evstate.events import EXTRA_BATCH, EventRecord
from evstate.ops import ParsedOp
from evstate.ops_apply import apply_update_ops
from evstate.values import decode_value, encode_value

__all__ = [
    "Committed",
    "Fence",
    "HashWrite",
    "MAX_CONFLICT_SECONDS",
    "Writer",
]

MAX_CONFLICT_SECONDS = 30.0
_NO_KEY = b"evstate:-"  # placeholder for an unused script key (never written)


class HashWrite(NamedTuple):
    """One hash change: ``new`` is the JSON text, or ``None`` to delete.

    ``ttl``: ``""`` no deadline (a set clears the key's), ``"k"`` keep the key's deadline
    (an update), else milliseconds from the commit.
    """

    scope: str
    key: str
    new: bytes | None
    ttl: str = ""


class Fence(NamedTuple):
    """The trigger parts of a commit: lease check, cursor, dead letter."""

    name: str
    token: str  # "" = no lease check (replay_parked)
    cursor: int | None = None
    park_mode: str = ""  # "", "put" (add a dead letter), "take" (remove; must exist)
    park_field: str = ""
    park_value: bytes = b""


class Committed(NamedTuple):
    """What a commit did: ``status`` ok / lease / conflict / gone, and the rest.

    The last revision, the timestamp, the old texts of the writes and each write's
    revision (an expiry event the script wrote first, for a key past its deadline, sits
    before its write).
    """

    status: str
    revision: int
    timestamp: int
    olds: list[bytes | None]
    revisions: tuple[int, ...] = ()


def _revisions(text: bytes) -> tuple[int, ...]:
    return tuple(int(r) for r in text.split(b",") if r)


def _committed(reply: list[Any]) -> Committed:
    status = reply[0].decode()
    if status == "dup":  # an earlier attempt of this same request was applied
        parts = reply[1].split(b":")
        revision, timestamp = int(parts[0] or 0), int(parts[1] or 0)
        written = _revisions(parts[2]) if len(parts) > 2 else (revision,)
        first = reply[2] if len(reply) > 2 else None
        return Committed("ok", revision, timestamp, [first], written)
    if status != "ok":
        return Committed(status, 0, 0, [])
    olds = list(reply[4:]) or [None]
    return Committed("ok", int(reply[1] or 0), int(reply[2] or 0), olds, _revisions(reply[3]))


def _reader(found: dict[tuple[str, str], bytes | None]) -> Callable[[str, str], bytes | None]:
    return lambda scope, key: found[(scope, key)]


def _name(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _ttl_mode(write: Write) -> str:
    """How a planned write treats the key's deadline (see :class:`HashWrite`)."""
    if write.ttl_ms is not None:
        return str(write.ttl_ms)
    return "k" if write.kind == "update" else ""


def _json_text(value: bytes | None) -> bytes | None:
    """An encoded (CBOR) value as the JSON text the hashes hold."""
    return None if value is None else dump_value(decode_value(value))


class Writer:
    """Builds and runs COMMIT for the store and the trigger runners."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._stripes = [threading.Lock() for _ in range(64)]

    def commit(
        self,
        writes: Sequence[HashWrite],
        *,
        cas: Sequence[tuple[str, str, bytes | None]] = (),
        fence: Fence | None = None,
        dedup: bool = True,
        atomic: bool = False,
    ) -> Committed:
        """Run one COMMIT; retried transparently (the request id makes that safe).

        ``cas`` lists ``(scope, key, expected old text or None for missing)``. ``atomic``
        marks the entries as one batch (the ``batch`` field; a reader of history then
        knows no state between them existed).

        Raises:
            BackendUnavailableError, StorageError.
        """
        state_keys: list[bytes] = []
        index: dict[bytes, int] = {}

        def slot(scope: str) -> int:
            name = state_key(scope)
            if name not in index:
                index[name] = 8 + len(state_keys)
                state_keys.append(name)
            return index[name]

        body: list[Any] = []
        for scope, key, expected in cas:
            body += [slot(scope), key.encode("utf-8", "surrogatepass")]
            body += [b"0", b""] if expected is None else [b"1", expected]
        for scope, key, new, ttl in writes:
            body += [slot(scope), scope.encode("utf-8", "surrogatepass")]
            body += [key.encode("utf-8", "surrogatepass")]
            body += [b"d", b""] if new is None else [b"s", new]
            body.append(ttl)
        fence = fence or Fence("", "")
        request = request_key(new_request_id()) if dedup else _NO_KEY
        keys = [
            META,
            LOG,
            request,
            trigger_key(fence.name) if fence.name else _NO_KEY,
            lease_key(fence.name) if fence.name else _NO_KEY,
            parked_key(fence.name) if fence.name else _NO_KEY,
            TTL,
            *state_keys,
        ]
        args = [
            REQUEST_TTL_MS if dedup else "",
            fence.token,
            fence.name,
            "" if fence.cursor is None else fence.cursor,
            fence.park_mode,
            fence.park_field,
            fence.park_value,
            len(cas),
            len(writes),
            "1" if atomic else "",
            *body,
        ]
        return _committed(self.backend.script("commit", keys, args, "write"))

    # ---- the store's writes -----------------------------------------------------------

    def put(
        self,
        scope: str,
        key: str,
        new: bytes | None,
        *,
        cas: tuple[bytes | None] | None = None,
        ttl: str = "",
    ) -> Committed:
        """One event on one key: ``set`` (``new`` = JSON text) or ``delete`` (``None``).

        ``cas=(expected,)`` writes only if the key still holds ``expected`` (``None``: is
        missing, or past its deadline); otherwise the status is ``conflict`` and nothing is
        written. ``ttl`` as for :class:`HashWrite`.
        """
        keys = [META, LOG, request_key(new_request_id()), state_key(scope), TTL]
        cas_args: list[Any] = [b"", b""]
        if cas is not None:
            cas_args = [b"0", b""] if cas[0] is None else [b"1", cas[0]]
        args = [
            REQUEST_TTL_MS,
            scope.encode("utf-8", "surrogatepass"),
            key.encode("utf-8", "surrogatepass"),
            b"" if new is None else new,
            b"d" if new is None else b"s",
            *cas_args,
            ttl,
        ]
        reply = self.backend.script("put", keys, args, "write")
        return _committed(reply)

    def update(
        self, scope: str, key: str, ops: list[ParsedOp]
    ) -> tuple[Committed, bytes, list[dict[str, Any]]]:
        """Apply ``ops`` atomically (compare-and-set loop); returns (commit, new text, errors).

        Raises:
            StorageError: the key kept changing for ``MAX_CONFLICT_SECONDS``.
        """
        lock = self._stripes[hash((scope, key)) % len(self._stripes)]
        deadline = time.monotonic() + MAX_CONFLICT_SECONDS
        with lock:
            for attempt in itertools.count(1):
                old = self.read_live(scope, key)[0]
                current = {} if old is None else load_value(old, f"{scope}/{key}")
                new_value, errors = apply_update_ops(current, ops, missing=old is None)
                new = dump_value(new_value)
                done = self.put(scope, key, new, cas=(old,), ttl="k")
                if done.status == "ok":
                    return done._replace(olds=[old]), new, errors
                if time.monotonic() > deadline:
                    raise StorageError(
                        f"update of {scope!r}/{key!r} conflicted with other writers "
                        f"{attempt} times in {MAX_CONFLICT_SECONDS:.0f} s"
                    )
                sleep_jitter(attempt)
        raise AssertionError("unreachable")

    def read_live(self, scope: str, key: str) -> tuple[bytes | None, int | None, int]:
        """``(JSON text or None, deadline or None, Redis's now)`` of ``scope/key``.

        A key past its deadline reads as missing.
        """
        value, deadline, now = self.backend.script(
            "read_key", [state_key(scope), TTL], [_name(scope), _name(key)], "read"
        )
        return value or None, int(deadline) if deadline else None, int(now)

    def compare_and_set(
        self, scope: str, key: str, expected: Any, new: bytes, ttl: str = ""
    ) -> tuple[Committed | None, bytes | None]:
        """Write ``new`` (JSON text) if ``scope/key`` holds ``expected`` (JSON equality).

        Returns ``(commit, old text)`` when it swapped, ``(None, current text)`` when the
        key held something else. A conflict (another process wrote between the read and
        the script) reads again, so the answer is always about one real state.

        Raises:
            StorageError: the key kept changing for ``MAX_CONFLICT_SECONDS``.
        """
        lock = self._stripes[hash((scope, key)) % len(self._stripes)]
        expected_cbor = None if expected is None else encode_value(expected)
        deadline = time.monotonic() + MAX_CONFLICT_SECONDS
        with lock:
            for attempt in itertools.count(1):
                old = self.read_live(scope, key)[0]
                stored = json_to_cbor(old, f"{scope}/{key}")
                if not expected_matches(stored, expected, expected_cbor):
                    return None, old
                done = self.put(scope, key, new, cas=(old,), ttl=ttl)
                if done.status == "ok":
                    return done._replace(olds=[old]), old
                if time.monotonic() > deadline:
                    raise StorageError(
                        f"compare-and-set of {scope!r}/{key!r} conflicted with other writers "
                        f"{attempt} times in {MAX_CONFLICT_SECONDS:.0f} s"
                    )
                sleep_jitter(attempt)
        raise AssertionError("unreachable")

    # ---- batches and trigger commits ------------------------------------------------------

    def commit_writes(
        self, writes: Sequence[Write], fence: Fence | None = None
    ) -> tuple[str, list[EventRecord]]:
        """Commit ``writes`` in one script, atomically (a batch, or a handler's writes).

        :class:`~evstate.core.writes.Write` records are planned by the one planner
        (:func:`~evstate.core.writes.plan_records`) against the values read now, and
        committed with a compare-and-set on every key they touch: if another process
        changed one meanwhile, nothing is written and the plan is made again. With a
        ``fence`` (a trigger's lease, cursor, dead letter) they commit with it. Returns the
        commit status (``ok``; ``lease``: the fence's lease was lost, nothing written;
        ``gone``) and the events made.

        Raises:
            CompareFailedError: a ``cas`` write did not match (nothing written).
            StorageError: the keys kept conflicting for ``MAX_CONFLICT_SECONDS``.
        """
        touched = list(dict.fromkeys((w.scope, w.key) for w in writes))
        deadline = time.monotonic() + MAX_CONFLICT_SECONDS
        for attempt in itertools.count(1):
            calls = [([state_key(s), TTL], [_name(s), _name(k)]) for s, k in touched]
            replies = self.backend.script_many("read_key", calls, "read") if touched else []
            texts: dict[tuple[str, str], bytes | None] = {
                where: reply[0] or None for where, reply in zip(touched, replies, strict=True)
            }
            stored = {where: json_to_cbor(text, "/".join(where)) for where, text in texts.items()}
            records = plan_records(writes, _reader(stored), 1, 0)
            planned = [
                HashWrite(r.scope, r.key, _json_text(r.new), _ttl_mode(w))
                for r, w in zip(records, writes, strict=True)
            ]
            cas = [(scope, key, texts[(scope, key)]) for scope, key in touched]
            done = self.commit(
                planned, cas=cas, fence=fence, dedup=bool(planned), atomic=len(planned) > 1
            )
            if done.status != "conflict":
                if done.status != "ok" or not records:
                    return done.status, []
                first = done.revision - len(records) + 1
                return "ok", [
                    r._replace(revision=first + i, timestamp=done.timestamp)._replace(
                        extra=None if r.extra is None else {EXTRA_BATCH: first}
                    )
                    for i, r in enumerate(records)
                ]
            if time.monotonic() > deadline:
                what = f"trigger {fence.name!r}: its writes" if fence else "a batch's keys"
                raise StorageError(f"{what} kept conflicting with other writers")
            sleep_jitter(attempt)
        raise AssertionError("unreachable")

    def commit_handler(self, writes: Sequence[Write], fence: Fence) -> str:
        """Commit a handler's ``event.store`` writes with the fence; returns the status."""
        return self.commit_writes(writes, fence)[0]
