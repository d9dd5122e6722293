"""Atomic multi-key batches: ``with store.batch() as b:``.

A :class:`Batch` collects changes on any scopes and keys; leaving the ``with`` block
commits them as ONE log record (one Lua script on Redis): all of them or none. Each change
is still its own event, in order, for triggers and history; a reader never sees some of
them without the others (docs/api.md, "Batches").

Arguments are checked as they are added (a bad name, value or op raises at once and, as
the exception leaves the block, the batch is discarded). Changes are applied at commit, in
order, to the state current then: ``update`` ops and ``compare_and_set`` expectations see
the changes before them in the batch. A compare-and-set that does not match aborts the
whole batch with :class:`~evstate.errors.CompareFailedError`.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any, Protocol

from evstate.config import Config
from evstate.core.arguments import check_name
from evstate.core.writes import Write, check_ttl, encode_checked
from evstate.errors import InvalidRequestError
from evstate.events import Event, EventRecord
from evstate.ops import parse_ops
from evstate.values import validate_value

__all__ = ["Batch", "BatchMethods", "BatchTarget"]


class BatchTarget(Protocol):
    """What a batch needs of its store."""

    def _check_open(self) -> None: ...

    def _batch_value_limit(self) -> int | None:
        """``max_value_bytes`` of the store."""

    def _commit_batch(self, writes: Sequence[Write]) -> builtins.list[EventRecord]:
        """Commit ``writes`` as one atomic unit; returns the events made.

        Raises:
            CompareFailedError: a compare-and-set did not match (nothing written).
        """


class Batch:
    """Changes to commit together. Not thread-safe: one batch belongs to one thread.

    After the block, :attr:`events` lists the events committed (in order) and
    :attr:`revision` is the revision of the last one (``None`` for an empty batch).
    """

    def __init__(self, store: BatchTarget) -> None:
        self._store = store
        self._writes: list[Write] = []
        self._limit = store._batch_value_limit()
        self._state = "open"
        self._records: builtins.list[EventRecord] = []
        self.revision: int | None = None

    def _add(self, write: Write) -> None:
        if self._state != "open":
            raise InvalidRequestError(f"the batch is {self._state}; start a new one")
        self._writes.append(write)

    def _names(self, scope: str, key: str) -> None:
        check_name("scope", scope)
        check_name("key", key)

    def set(self, scope: str, key: str, value: Any, *, ttl_ms: int | None = None) -> None:
        """Set ``scope/key`` to ``value`` at commit (checked now, as ``Store.set`` does).

        ``ttl_ms``: the key expires that long after the commit (none: no TTL).
        """
        self._names(scope, key)
        if ttl_ms is not None:
            check_ttl(ttl_ms)
        self._add(Write("set", scope, key, encode_checked(value, self._limit), ttl_ms))

    def update(self, scope: str, key: str, ops: Any) -> None:
        """Apply update ops to ``scope/key`` at commit (parsed now: bad ops raise here)."""
        self._names(scope, key)
        self._add(Write("update", scope, key, parse_ops(ops)))

    def delete(self, scope: str, key: str) -> None:
        """Delete ``scope/key`` at commit (a missing key still makes a ``deleted`` event)."""
        self._names(scope, key)
        self._add(Write("delete", scope, key, None))

    def compare_and_set(
        self, scope: str, key: str, expected: Any, value: Any, *, ttl_ms: int | None = None
    ) -> None:
        """At commit, set ``scope/key`` to ``value`` if it holds ``expected``, else abort all.

        ``expected`` ``None`` means "only if absent"; equality is JSON equality. ``ttl_ms``
        as for :meth:`set`.
        """
        self._names(scope, key)
        if expected is not None:
            validate_value(expected, where="expected")
        if ttl_ms is not None:
            check_ttl(ttl_ms)
        encoded = encode_checked(value, self._limit)
        self._add(Write("cas", scope, key, (expected, encoded), ttl_ms))

    def __len__(self) -> int:
        return len(self._writes)

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if exc_type is not None:
            self._state = "discarded"
            self._writes = []
            return
        self.commit()

    def commit(self) -> None:
        """Commit now (leaving the ``with`` block does this). Raises as the store does."""
        if self._state != "open":
            raise InvalidRequestError(f"the batch is {self._state}; start a new one")
        self._state = "committing"
        try:
            records = self._store._commit_batch(self._writes) if self._writes else []
        except BaseException:
            self._state = "discarded"
            raise
        finally:
            self._writes = []
        self._state = "committed"
        self._records = records
        self.revision = records[-1].revision if records else None

    @property
    def events(self) -> builtins.list[Event]:
        """The events committed, in order (empty before the commit); fresh copies."""
        return [record.to_event() for record in self._records]


class BatchMethods:
    """``batch()`` for a store that implements ``_commit_batch`` (a mixin)."""

    _config: Config

    def _check_open(self) -> None:
        raise NotImplementedError

    def batch(self) -> Batch:
        """Start an atomic multi-key batch: ``with store.batch() as b: b.set(...)``.

        Everything added commits as one log record (one Lua script on Redis) when the
        block ends, or nothing does (see :class:`Batch`).
        """
        self._check_open()
        return Batch(self)

    def _batch_value_limit(self) -> int | None:
        return self._config.max_value_bytes

    def _commit_batch(self, writes: Sequence[Write]) -> builtins.list[EventRecord]:
        raise NotImplementedError
