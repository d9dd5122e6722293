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
from collections.abc import Sequence
from typing import Any, NamedTuple

from evstate.backends.redis.client import (
    Backend,
    dump_value,
    load_value,
    new_request_id,
    sleep_jitter,
)
from evstate.backends.redis.scripts import (
    LOG,
    META,
    REQUEST_TTL_MS,
    lease_key,
    parked_key,
    request_key,
    state_key,
    trigger_key,
)
from evstate.core.writes import Write
from evstate.errors import StorageError
from evstate.ops import ParsedOp
from evstate.ops_apply import apply_update_ops
from evstate.values import decode_value

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
    """One hash change: ``new`` is the JSON text, or ``None`` to delete."""

    scope: str
    key: str
    new: bytes | None


class Fence(NamedTuple):
    """The trigger parts of a commit: lease check, cursor, dead letter."""

    name: str
    token: str  # "" = no lease check (replay_parked)
    cursor: int | None = None
    park_mode: str = ""  # "", "put" (add a dead letter), "take" (remove; must exist)
    park_field: str = ""
    park_value: bytes = b""


class Committed(NamedTuple):
    """What a commit did: ``status`` ok / lease / conflict / gone; revision and old texts."""

    status: str
    revision: int
    timestamp: int
    olds: list[bytes | None]


def _committed(reply: list[Any]) -> Committed:
    status = reply[0].decode()
    if status == "dup":  # an earlier attempt of this same request was applied
        revision, timestamp = reply[1].split(b":", 1)
        first = reply[2] if len(reply) > 2 else None
        return Committed("ok", int(revision or 0), int(timestamp or 0), [first])
    if status != "ok":
        return Committed(status, 0, 0, [])
    olds = list(reply[3:]) or [None]
    return Committed("ok", int(reply[1] or 0), int(reply[2] or 0), olds)


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
    ) -> Committed:
        """Run one COMMIT; retried transparently (the request id makes that safe).

        ``cas`` lists ``(scope, key, expected old text or None for missing)``.

        Raises:
            BackendUnavailableError, StorageError.
        """
        state_keys: list[bytes] = []
        index: dict[bytes, int] = {}

        def slot(scope: str) -> int:
            name = state_key(scope)
            if name not in index:
                index[name] = 7 + len(state_keys)
                state_keys.append(name)
            return index[name]

        body: list[Any] = []
        for scope, key, expected in cas:
            body += [slot(scope), key.encode("utf-8", "surrogatepass")]
            body += [b"0", b""] if expected is None else [b"1", expected]
        for scope, key, new in writes:
            body += [slot(scope), scope.encode("utf-8", "surrogatepass")]
            body += [key.encode("utf-8", "surrogatepass")]
            body += [b"d", b""] if new is None else [b"s", new]
        fence = fence or Fence("", "")
        request = request_key(new_request_id()) if dedup else _NO_KEY
        keys = [
            META,
            LOG,
            request,
            trigger_key(fence.name) if fence.name else _NO_KEY,
            lease_key(fence.name) if fence.name else _NO_KEY,
            parked_key(fence.name) if fence.name else _NO_KEY,
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
    ) -> Committed:
        """One event on one key: ``set`` (``new`` = JSON text) or ``delete`` (``None``).

        ``cas=(expected,)`` writes only if the key still holds ``expected`` (``None``: is
        missing); otherwise the status is ``conflict`` and nothing is written.
        """
        keys = [META, LOG, request_key(new_request_id()), state_key(scope)]
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
        name = state_key(scope)
        field = key.encode("utf-8", "surrogatepass")
        deadline = time.monotonic() + MAX_CONFLICT_SECONDS
        with lock:
            for attempt in itertools.count(1):
                old: bytes | None = self.backend.run("read", lambda c: c.hget(name, field))
                current = {} if old is None else load_value(old, f"{scope}/{key}")
                new_value, errors = apply_update_ops(current, ops, missing=old is None)
                new = dump_value(new_value)
                done = self.put(scope, key, new, cas=(old,))
                if done.status == "ok":
                    return done._replace(olds=[old]), new, errors
                if time.monotonic() > deadline:
                    raise StorageError(
                        f"update of {scope!r}/{key!r} conflicted with other writers "
                        f"{attempt} times in {MAX_CONFLICT_SECONDS:.0f} s"
                    )
                sleep_jitter(attempt)
        raise AssertionError("unreachable")

    # ---- trigger commits ----------------------------------------------------------------

    def commit_handler(self, writes: Sequence[Write], fence: Fence) -> str:
        """Commit a handler's ``event.store`` writes with the fence (cursor, dead letter).

        ``writes`` are :class:`~evstate.core.writes.Write` records: ``("set", scope,
        key, CBOR)``, ``("update", scope, key, ops)``, ``("delete", scope, key, None)``;
        updates are applied to the state current at commit. Returns the commit status
        (``ok``, ``lease``: this process lost the lease, nothing written; ``gone``).
        """
        touched = list(dict.fromkeys((scope, key) for _, scope, key, _ in writes))
        deadline = time.monotonic() + MAX_CONFLICT_SECONDS
        for attempt in itertools.count(1):

            def read(c: Any) -> list[Any]:
                pipe = c.pipeline(transaction=False)
                for scope, key in touched:
                    pipe.hget(state_key(scope), key.encode("utf-8", "surrogatepass"))
                return list(pipe.execute())

            current = dict(
                zip(touched, self.backend.run("read", read) if touched else [], strict=True)
            )
            overlay: dict[tuple[str, str], bytes | None] = dict(current)
            planned: list[HashWrite] = []
            for kind, scope, key, arg in writes:
                old = overlay[(scope, key)]
                new: bytes | None
                if kind == "set":
                    new = dump_value(decode_value(arg))
                elif kind == "update":
                    value = {} if old is None else load_value(old, f"{scope}/{key}")
                    new = dump_value(apply_update_ops(value, arg, missing=old is None)[0])
                else:
                    new = None
                overlay[(scope, key)] = new
                planned.append(HashWrite(scope, key, new))
            cas = [(scope, key, current[(scope, key)]) for scope, key in touched]
            done = self.commit(planned, cas=cas, fence=fence, dedup=bool(planned))
            if done.status != "conflict":
                return done.status
            if time.monotonic() > deadline:
                raise StorageError(f"trigger {fence.name!r}: its writes kept conflicting")
            sleep_jitter(attempt)
        raise AssertionError("unreachable")
