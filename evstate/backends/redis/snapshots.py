"""The redis store's snapshots and replay over stored JSON texts.

A snapshot is a hash ``evstate:snap:<rev>`` (timestamp, chunk count, key count, bytes,
CRC-32 of each chunk) and chunks ``evstate:snapchunk:<rev>:<i>``: JSON arrays of
``[scope, key, value JSON text]``, with a fourth element, the deadline (ms), for a key with
a time-to-live. In memory, a text with a deadline carries it as stored values do
(:func:`~evstate.backends.redis.client.text_with_deadline`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

from evstate.backends.redis.client import (
    Backend,
    StreamEntry,
    json_to_cbor,
    text_with_deadline,
)
from evstate.backends.redis.scripts import SNAPSHOTS, chunk_key, snapshot_key
from evstate.core.replay import Scopes
from evstate.errors import CorruptionError, HistoryCompactedError
from evstate.values import deadline_of, strip_deadline

__all__ = [
    "CHUNK_KEYS",
    "Texts",
    "apply_entry",
    "read_snapshot",
    "to_scopes",
    "write_snapshot",
]

Texts = dict[str, dict[str, bytes]]
CHUNK_KEYS = 4096  # keys per snapshot chunk


def apply_entry(state: Texts, entry: StreamEntry) -> None:
    """Apply one event to a state map (replay)."""
    if entry.event_type == "deleted":
        keys = state.get(entry.scope)
        if keys is not None and keys.pop(entry.key, None) is not None and not keys:
            del state[entry.scope]
    else:
        assert entry.new is not None
        state.setdefault(entry.scope, {})[entry.key] = text_with_deadline(entry.new, entry.expires)


def _snapshot_entry(scope: str, key: str, text: bytes) -> list[Any]:
    """``[scope, key, JSON text]``, plus the deadline when the key has one."""
    deadline = deadline_of(text)
    plain = strip_deadline(text).decode("utf-8", "surrogatepass")
    return [scope, key, plain] if deadline is None else [scope, key, plain, deadline]


def to_scopes(texts: Texts) -> Scopes:
    """A state of stored JSON texts as the encoded values every other store holds."""
    return {
        scope: {key: json_to_cbor(text, f"{scope}/{key}") or b"" for key, text in keys.items()}
        for scope, keys in texts.items()
    }


def read_snapshot(backend: Backend, revision: int, horizon: Callable[[], int]) -> Texts:
    """The state held by the snapshot at ``revision``.

    Raises:
        HistoryCompactedError: it was deleted (compacted) while being read.
        CorruptionError: a chunk is missing or does not match its checksum.
    """
    info = backend.run("read snapshot", lambda c: c.hgetall(snapshot_key(revision)))
    if not info:
        raise HistoryCompactedError(
            f"snapshot {revision} was compacted while being read", horizon=horizon()
        )
    chunks = int(info[b"chunks"])
    crcs = info.get(b"crcs", b"").decode().split(",") if info.get(b"crcs") else []
    raw = backend.run(
        "read snapshot", lambda c: c.mget([chunk_key(revision, i) for i in range(chunks)])
    )
    state: Texts = {}
    for i, body in enumerate(raw):
        if body is None:
            raise CorruptionError(f"snapshot {revision}: chunk {i} is missing")
        if crcs and int(crcs[i]) != zlib.crc32(body):
            raise CorruptionError(f"snapshot {revision}: chunk {i} fails its checksum")
        for scope, key, text, *deadline in json.loads(body.decode("utf-8", "surrogatepass")):
            stored = text.encode("utf-8", "surrogatepass")
            state.setdefault(scope, {})[key] = text_with_deadline(
                stored, deadline[0] if deadline else None
            )
    if sum(len(k) for k in state.values()) != int(info[b"keys"]):
        raise CorruptionError(f"snapshot {revision}: key count differs from its header")
    return state


def write_snapshot(backend: Backend, revision: int, timestamp: int, state: Texts) -> int:
    """Store ``state`` as the snapshot of ``revision`` (maintenance lock held).

    Chunks are written first; adding the revision to ``evstate:snaps`` commits it.
    Returns the bytes written.
    """
    triples = [
        _snapshot_entry(scope, key, text)
        for scope in sorted(state)
        for key, text in sorted(state[scope].items())
    ]
    bodies = [
        json.dumps(triples[i : i + CHUNK_KEYS], ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "surrogatepass"
        )
        for i in range(0, len(triples), CHUNK_KEYS)
    ]
    for first in range(0, len(bodies), 64):

        def put(c: Any, first: int = first) -> None:
            pipe = c.pipeline(transaction=False)
            for i in range(first, min(first + 64, len(bodies))):
                pipe.set(chunk_key(revision, i), bodies[i])
            pipe.execute()

        backend.run("write snapshot", put)
    size = sum(len(b) for b in bodies)

    def commit(c: Any) -> None:
        pipe = c.pipeline(transaction=True)
        pipe.hset(
            snapshot_key(revision),
            mapping={
                "timestamp": timestamp,
                "chunks": len(bodies),
                "keys": len(triples),
                "bytes": size,
                "crcs": ",".join(str(zlib.crc32(b)) for b in bodies),
            },
        )
        pipe.zadd(SNAPSHOTS, {str(revision): revision})
        pipe.execute()

    backend.run("commit snapshot", commit)
    return size
