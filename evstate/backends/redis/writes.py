"""The redis adapter's write path: every state change is one run of the COMMIT script.

``set`` and ``delete`` need no read beforehand: the script reads the old value, writes the
hash, takes the next revision and appends the stream entry in one atomic step.

``update`` first runs the ``UPDATE`` script (:mod:`.update_script`): it applies the ops
inside Redis and writes like ``PUT``, in one atomic step, so concurrent updates of one key
never retry. It does only what it can reproduce byte for byte from the Python op engine
(:func:`evstate.ops_apply.apply_update_ops`, the reference) and otherwise *declines* before
writing anything, answering with the text it read. Then the update runs in Python with
optimistic concurrency: apply the ops to that text, and commit with a compare-and-set on it.
If another writer changed the key in between, the script writes nothing and answers
``conflict``; the update is recomputed from the new value and tried again. Threads of one
process take a per-key lock for this path, so they never conflict with each other.

Trigger commits (a handler's writes through ``event.store`` plus the cursor move, or a dead
letter) are the same script with more parts, fenced by the trigger's lease.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from evstate.backends.redis.client import (
    Backend,
    dump_value,
    json_to_cbor,
    load_value,
    new_request_id,
    pack_bulk,
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
from evstate.backends.redis.update_plan import UpdatePlan, plan_update, reply_errors
from evstate.core.writes import Write, expected_matches, plan_records
from evstate.errors import StorageError
from evstate.events import EXTRA_BATCH, EventRecord
from evstate.ops import ParsedOp
from evstate.ops_apply import apply_update_ops
from evstate.values import decode_value, encode_value

__all__ = [
    "Committed",
    "FastUpdate",
    "Fence",
    "HashWrite",
    "MAX_CONFLICT_SECONDS",
    "Writer",
    "conflict_retries",
]

log = logging.getLogger("evstate")
MAX_CONFLICT_SECONDS = 30.0
_NO_KEY = b"evstate:-"  # placeholder for an unused script key (never written)
_META, _LOG, _TTL = META.encode(), LOG.encode(), TTL.encode()
_REQUEST_TTL = str(REQUEST_TTL_MS).encode()


def conflict_retries(what: str) -> Iterator[int]:
    """Attempt numbers (1, 2, ...) for an optimistic write that a conflict sends round again.

    Backs off (``sleep_jitter``) between attempts, and gives up once ``MAX_CONFLICT_SECONDS``
    have passed: the loop's next turn raises ``StorageError`` naming ``what``.
    """
    deadline = time.monotonic() + MAX_CONFLICT_SECONDS
    for attempt in itertools.count(1):
        yield attempt
        if time.monotonic() > deadline:
            raise StorageError(
                f"{what} conflicted with other writers "
                f"{attempt} times in {MAX_CONFLICT_SECONDS:.0f} s"
            )
        sleep_jitter(attempt)


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


class FastUpdate(NamedTuple):
    """What one run of the ``UPDATE`` script did.

    ``status`` ``ok`` (applied: the commit, the old and new texts, the errors), ``dup`` (an
    earlier attempt of the same request was applied: the commit and the texts of its stream
    entry, ``new`` ``None`` if that entry is gone) or ``fallback`` (it declined for
    ``reason`` and wrote nothing; ``old`` is the live text it read, ``None`` for missing).
    """

    status: str
    done: Committed | None
    old: bytes | None
    new: bytes | None
    errors: list[dict[str, Any]]
    reason: str = ""


def _applied(reply: bytes, static: Sequence[tuple[int, str, str]]) -> FastUpdate:
    """Parse the string the ``UPDATE`` script returns when it applied the ops."""
    head, _, body = reply.partition(b"\n")
    _, revision, timestamp, old_size, new_size = head.split(b" ")
    at = max(int(old_size), 0)
    old = body[:at] if int(old_size) >= 0 else None
    new = body[at : at + int(new_size)]
    at += int(new_size)
    found: list[bytes] = []
    while at < len(body):  # '<op index> <code> <bytes of message>\n' message, per failed op
        line, _, rest = body[at:].partition(b"\n")
        index, code, size = line.split(b" ")
        found += [index, code, rest[: int(size)]]
        at += len(line) + 1 + int(size)
    done = Committed("ok", int(revision), int(timestamp), [old], (int(revision),))
    return FastUpdate("ok", done, old, new, reply_errors(static, found))


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
        """Apply ``ops`` atomically; returns (commit, new text, errors).

        The ``UPDATE`` script first; if it declines (or :func:`plan_update` rules it out),
        the compare-and-set loop in Python, starting from the text the script read.

        Raises:
            StorageError: the key kept changing for ``MAX_CONFLICT_SECONDS``.
        """
        plan = plan_update(ops)
        first: tuple[bytes | None] | None = None
        if plan is not None:
            fast = self.update_fast(scope, key, plan)
            if fast.status == "ok":
                assert fast.done is not None and fast.new is not None
                return fast.done, fast.new, fast.errors
            if fast.status == "dup":  # applied by an attempt whose reply was lost
                assert fast.done is not None
                return self._replayed(scope, key, ops, fast)
            if fast.reason.startswith("lua:"):  # a fault of the Lua engine, not a decline
                log.warning(
                    "evstate: the UPDATE script failed (%s); updated in Python", fast.reason
                )
            first = (fast.old,)
        lock = self._stripes[hash((scope, key)) % len(self._stripes)]
        with lock:
            for _attempt in conflict_retries(f"update of {scope!r}/{key!r}"):
                old = first[0] if first is not None else self.read_live(scope, key)[0]
                first = None
                current = {} if old is None else load_value(old, f"{scope}/{key}")
                new_value, errors = apply_update_ops(current, ops, missing=old is None)
                new = dump_value(new_value)
                done = self.put(scope, key, new, cas=(old,), ttl="k")
                if done.status == "ok":
                    return done._replace(olds=[old]), new, errors
        raise AssertionError("unreachable")

    def update_fast(self, scope: str, key: str, plan: UpdatePlan) -> FastUpdate:
        """Run the ``UPDATE`` script once (retried transparently: its request id dedups).

        Returns its outcome: ``ok``, ``fallback`` (nothing written) or ``dup`` (an earlier
        attempt of this call was applied; ``old``/``new`` from its stream entry).
        """
        request = request_key(new_request_id()).encode()
        keys = [_META, _LOG, request, state_key(scope), _TTL]
        packed = pack_bulk([*keys, _REQUEST_TTL, _name(scope), _name(key)]) + plan.packed
        reply = self.backend.call_packed("update", 5, packed, 8 + plan.nargs, "write")
        if isinstance(reply, bytes):  # applied: one string (see update_script.LUA_UPDATE)
            return _applied(reply, plan.static_errors)
        status = reply[0].decode()
        if status == "dup":
            revision, timestamp = (int(part) for part in reply[1].split(b":")[:2])
            done = Committed("ok", revision, timestamp, [reply[2]], (revision,))
            return FastUpdate("dup", done, reply[2], reply[3], [])
        return FastUpdate("fallback", None, reply[1], None, [], reply[2].decode())

    def _replayed(
        self, scope: str, key: str, ops: list[ParsedOp], fast: FastUpdate
    ) -> tuple[Committed, bytes, list[dict[str, Any]]]:
        """The answer to an update whose reply was lost, rebuilt from its stream entry.

        The entry holds the old and new texts; the errors come from applying the ops again,
        in Python, to the old text (the engines agree: the op matrix). If the entry is gone
        already (compacted within the request window, which needs a very short retention),
        the answer is the best left: the key's current value, old value unknown, no errors.
        """
        assert fast.done is not None
        if fast.new is None:
            return fast.done._replace(olds=[None]), self.read_live(scope, key)[0] or b"null", []
        old = fast.old
        current = {} if old is None else load_value(old, f"{scope}/{key}")
        errors = apply_update_ops(current, ops, missing=old is None)[1]
        return fast.done, fast.new, errors

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
        with lock:
            for _attempt in conflict_retries(f"compare-and-set of {scope!r}/{key!r}"):
                old = self.read_live(scope, key)[0]
                stored = json_to_cbor(old, f"{scope}/{key}")
                if not expected_matches(stored, expected, expected_cbor):
                    return None, old
                done = self.put(scope, key, new, cas=(old,), ttl=ttl)
                if done.status == "ok":
                    return done._replace(olds=[old]), old
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
        what = f"trigger {fence.name!r}: its writes" if fence else "a batch's keys"
        for _attempt in conflict_retries(what):
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
        raise AssertionError("unreachable")

    def commit_handler(self, writes: Sequence[Write], fence: Fence) -> str:
        """Commit a handler's ``event.store`` writes with the fence; returns the status."""
        return self.commit_writes(writes, fence)[0]
