"""The client half of the ``UPDATE`` fast path: which ops go to Redis, and how.

:func:`plan_update` turns parsed ops into the op arguments of the ``UPDATE`` script
(:mod:`.update_script`), or returns ``None`` when the fast path cannot take them at all, so
the compare-and-set path runs without a wasted round trip. :func:`reply_errors` builds the
engine's error list from what the client found and what the script reported.

The checks that depend on the op alone (the path bounds every op shares, a merge value's
type, width, proto keys and depth) are made here, by the Python engine itself: an op applied
to a *missing* key can fail only for those reasons (every handler starts from ``{}`` or from
scratch there), so ``apply_update_ops({}, [op], missing=True)`` returns exactly that op's
static error, in the engine's words. Ops that fail it are not sent; the script applies the
rest and reports only the errors that depend on the stored value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from evstate.backends.redis.client import dump_value, pack_bulk
from evstate.backends.redis.update_script import FAST_PATH_MAX_BYTES
from evstate.ops import DOC_URL, ParsedOp
from evstate.ops_apply import apply_update_ops

__all__ = ["SAFE_INTEGER", "UpdatePlan", "plan_update", "reply_errors"]

SAFE_INTEGER = 2**53
"""Integers strictly inside ±2**53 are exact in Lua's doubles; larger amounts stay in Python."""

_VALUE_OPS = frozenset({"set", "merge", "append"})
_ARITHMETIC = frozenset({"increment", "decrement"})
# Values whose type and ``==`` decide their JSON text (not float: 0.0 == -0.0).
_CACHED_VALUE_TYPES = frozenset({type(None), bool, int, str})
_CACHE_SIZE = 1024


class UpdatePlan(NamedTuple):
    """The script's op arguments, packed, and the errors found without the stored value.

    ``packed`` holds ``nargs`` RESP bulk strings (``ARGV[4:]`` of ``UPDATE``).
    """

    packed: bytes
    nargs: int
    static_errors: tuple[tuple[int, str, str], ...]  # (op index, code, message)


_cache: dict[tuple[Any, ...], UpdatePlan] = {}


def _cache_key(ops: Sequence[ParsedOp]) -> tuple[Any, ...] | None:
    """A key that tells apart every op list with a different plan, or None (not cached).

    Each value's type is part of the key, since ``1 == 1.0 == True`` in Python.
    """
    key: list[Any] = []
    for op in ops:
        if type(op.value) not in _CACHED_VALUE_TYPES:
            return None
        key.append((op.kind, op.segments, type(op.value), op.value, op.by))
    return tuple(key)


def _key_text(segment: str) -> bytes:
    """A path segment as the JSON text of an object key, spelled as :func:`dump_value` does.

    Raises:
        UnicodeEncodeError: a lone surrogate (Python's own path cannot store it either).
    """
    return json.dumps(segment, ensure_ascii=False).encode("utf-8")


def plan_update(ops: Sequence[ParsedOp]) -> UpdatePlan | None:
    """The fast-path plan of ``ops``, or ``None`` if any op must run in Python.

    ``None`` when an arithmetic amount is not a safe integer (``|by| >= 2**53``), a path
    segment is not valid Unicode or the op values' texts exceed ``FAST_PATH_MAX_BYTES``;
    everything else is sent, and the script declines what it cannot do exactly. Plans of
    op lists with scalar values are cached (a hot counter sends the same ops again and
    again).
    """
    key = _cache_key(ops)
    if key is not None:
        cached = _cache.get(key)
        if cached is not None:
            return cached
    plan = _plan(ops)
    if key is not None and plan is not None:
        if len(_cache) >= _CACHE_SIZE:
            _cache.clear()
        _cache[key] = plan
    return plan


def _plan(ops: Sequence[ParsedOp]) -> UpdatePlan | None:
    args: list[bytes] = []
    static: list[tuple[int, str, str]] = []
    sent = 0
    value_bytes = 0
    for index, op in enumerate(ops):
        problem = apply_update_ops({}, [op], missing=True)[1]
        if problem:
            static.append((index, problem[0]["code"], problem[0]["message"]))
            continue
        delta = b""
        if op.kind in _ARITHMETIC:
            amount = op.by if op.kind == "increment" else -op.by
            if not -SAFE_INTEGER < amount < SAFE_INTEGER:
                return None
            delta = str(amount).encode()
        segments = op.segments
        try:
            keys = [_key_text(segment) for segment in segments]
            label = (segments[-1] if op.kind == "append" else segments[0]) if segments else ""
            label2 = f"[{', '.join(segments)}]" if op.kind == "append" else ""
            labels = [label.encode("utf-8"), label2.encode("utf-8")]
        except UnicodeEncodeError:
            return None
        value = dump_value(op.value) if op.kind in _VALUE_OPS else b""
        value_bytes += len(value)
        if value_bytes > FAST_PATH_MAX_BYTES:
            return None
        args += [str(index).encode(), op.kind.encode(), delta, value, *labels]
        args += [str(len(keys)).encode(), *keys]
        sent += 1
    args.insert(0, str(sent).encode())
    return UpdatePlan(pack_bulk(args), len(args), tuple(static))


def reply_errors(
    static: Sequence[tuple[int, str, str]], found: Sequence[bytes]
) -> list[dict[str, Any]]:
    """The engine's error list: the static errors and the script's triples, in op order."""
    if not static and not found:
        return []
    triples = [
        (int(found[i]), found[i + 1].decode(), found[i + 2].decode("utf-8", "surrogatepass"))
        for i in range(0, len(found), 3)
    ]
    return [
        {"op_index": index, "code": code, "message": message, "doc_url": DOC_URL}
        for index, code, message in sorted([*static, *triples])
    ]
