"""The semantics of update ops: :func:`apply_update_ops`, the iii engine's rules.

Ops are applied best-effort, in order: a semantic problem (a bad path, a wrong target type)
never raises; it becomes an entry in the returned error list and the op is skipped. The
wire shapes and their parsing: :mod:`evstate.ops`.
"""

from __future__ import annotations

import math
from typing import Any

from evstate.ops import (
    DOC_URL,
    MAX_PATH_DEPTH,
    MAX_SEGMENT_BYTES,
    MAX_VALUE_DEPTH,
    MAX_VALUE_KEYS,
    PROTO_POLLUTION_KEYS,
    ParsedOp,
    fresh_copy,
)
from evstate.values import INT_MAX, INT_MIN, json_type_name, rust_debug_str

__all__ = ["apply_update_ops"]


# --------------------------------------------------------------------------- semantics


class _Document:
    """The value being updated, plus the engine's ``using_missing_default`` flag.

    ``missing`` stays true only while the key did not exist and no op has succeeded yet;
    while it holds, root ``increment``/``decrement``/``append`` start from scratch.
    """

    __slots__ = ("missing", "value")

    def __init__(self, value: Any, missing: bool) -> None:
        self.value = value
        self.missing = missing


# An op handler returns None on success or (code, message) for a per-op error.
_OpError = tuple[str, str] | None


def apply_update_ops(
    current: Any, ops: list[ParsedOp], *, missing: bool
) -> tuple[Any, list[dict[str, Any]]]:
    """Apply ``ops`` in order to ``current``, best-effort, exactly as the iii engine does.

    ``current`` must be a fresh object the caller owns: it is mutated in place. With
    ``missing=True`` (the key does not exist; a stored null is *not* missing) ``current``
    is ignored and the ops start from ``{}``. Values from ``ops`` are copied in, so the
    result shares nothing with the ops.

    Returns ``(new_value, errors)``. ``errors`` lists, in op order, one
    ``{"op_index", "code", "message", "doc_url"}`` per failed op (``op_index`` is the index
    in ``ops``); it is empty when every op succeeded. A failed op changes nothing.

    Raises nothing for any ops :func:`parse_ops` produced.
    """
    doc = _Document({} if missing else current, missing)
    errors: list[dict[str, Any]] = []
    for index, op in enumerate(ops):
        problem = _path_problem(op.kind, op.segments) or _HANDLERS[op.kind](doc, op)
        if problem is not None:
            code, message = problem
            errors.append({"op_index": index, "code": code, "message": message, "doc_url": DOC_URL})
    return doc.value, errors


def _path_problem(kind: str, segments: tuple[str, ...]) -> _OpError:
    """Check the path bounds every op shares."""
    if len(segments) > MAX_PATH_DEPTH:
        return (
            f"{kind}.path.too_deep",
            f"Path depth {len(segments)} exceeds maximum of {MAX_PATH_DEPTH}",
        )
    for segment in segments:
        if not segment:
            return f"{kind}.path.empty_segment", "Path contains an empty segment"
        size = len(segment.encode("utf-8"))
        if size > MAX_SEGMENT_BYTES:
            return (
                f"{kind}.path.segment_too_long",
                f"Path segment of {size} bytes exceeds maximum of {MAX_SEGMENT_BYTES}",
            )
        if segment in PROTO_POLLUTION_KEYS:
            return (
                f"{kind}.path.proto_polluted",
                f"Path segment '{segment}' is not allowed (prototype pollution).",
            )
    return None


def _target_not_object(kind: str, label: str, found: Any) -> tuple[str, str]:
    return (
        f"{kind}.target_not_object",
        f"Cannot {kind} at path '{label}': target is {json_type_name(found)}, expected object.",
    )


def _apply_set(doc: _Document, op: ParsedOp) -> _OpError:
    if not op.segments:
        doc.value = fresh_copy(op.value)
    elif isinstance(doc.value, dict):
        doc.value[op.segments[0]] = fresh_copy(op.value)
    else:
        return _target_not_object(op.kind, op.segments[0], doc.value)
    doc.missing = False
    return None


def _apply_merge(doc: _Document, op: ParsedOp) -> _OpError:
    problem = _merge_value_problem(op.value)
    if problem is not None:
        return problem
    if not op.segments:
        if not isinstance(doc.value, dict):
            return None  # the engine only logs a warning: a silent no-op, not an error
        target = doc.value
    else:
        if not isinstance(doc.value, dict):
            doc.value = {}
        target = _walk_or_create(doc.value, op.segments)
    for key, item in op.value.items():
        target[key] = fresh_copy(item)
    doc.missing = False
    return None


def _merge_value_problem(value: Any) -> _OpError:
    """Check a merge value: an object, not too wide, no proto keys, not too deep."""
    if not isinstance(value, dict):
        return "merge.value.not_an_object", "Merge value must be a JSON object"
    if len(value) > MAX_VALUE_KEYS:
        return (
            "merge.value.too_many_keys",
            f"Merge value has {len(value)} top-level keys, exceeds maximum of {MAX_VALUE_KEYS}",
        )
    # The engine walks a sorted map, so with several sinks present it names the first in
    # byte order; PROTO_POLLUTION_KEYS is already in that order.
    for key in PROTO_POLLUTION_KEYS:
        if key in value:
            return (
                "merge.value.proto_polluted",
                f"Merge value top-level key {rust_debug_str(key)} is a prototype-pollution sink",
            )
    depth = _json_depth(value)
    if depth > MAX_VALUE_DEPTH:
        return (
            "merge.value.too_deep",
            f"Merge value JSON nesting depth {depth} exceeds maximum of {MAX_VALUE_DEPTH}",
        )
    return None


def _json_depth(value: Any) -> int:
    """Depth as the engine counts it: a scalar is 0, a container 1 + its deepest child."""
    if not isinstance(value, dict | list):
        return 0
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return deepest


def _walk_or_create(node: dict[str, Any], segments: tuple[str, ...]) -> dict[str, Any]:
    """Descend ``segments`` from ``node``, replacing missing or non-object children by ``{}``."""
    for segment in segments:
        child = node.get(segment)
        if not isinstance(child, dict):
            child = {}
            node[segment] = child
        node = child
    return node


def _apply_arithmetic(doc: _Document, op: ParsedOp, delta: int) -> _OpError:
    """Shared body of increment and decrement; ``delta`` is ``by`` or ``-by``."""
    if not op.segments:
        if doc.missing:
            doc.value = delta
        else:
            result = _add(doc.value, delta)
            if result is None:
                return _not_number(op, doc.value)
            doc.value = result
    elif isinstance(doc.value, dict):
        key = op.segments[0]
        if key in doc.value:
            result = _add(doc.value[key], delta)
            if result is None:
                return _not_number(op, doc.value[key])
            doc.value[key] = result
        else:
            doc.value[key] = delta
    else:
        return _target_not_object(op.kind, op.segments[0], doc.value)
    doc.missing = False
    return None


def _add(number: Any, delta: int) -> int | float | None:
    """Return ``number + delta`` as the engine computes it, or None if it cannot.

    Integers are exact while the result fits i64 or u64 (the engine's checked i64/u64
    arithmetic); a float stays a float. None for non-numbers (bool and null included)
    and for results the engine cannot represent.
    """
    if isinstance(number, bool) or not isinstance(number, int | float):
        return None
    if isinstance(number, int):
        total = int(number) + delta
        return total if INT_MIN <= total <= INT_MAX else None
    # Rust converts `by` to f64 first (`by as f64`), exactly like float(delta) here.
    result = float(number) + float(delta)
    return result if math.isfinite(result) else None


def _not_number(op: ParsedOp, found: Any) -> tuple[str, str]:
    return (
        f"{op.kind}.not_number",
        f"Expected number at path '{op.segments[0] if op.segments else 'root'}', "
        f"got {json_type_name(found)}.",
    )


def _apply_append(doc: _Document, op: ParsedOp) -> _OpError:
    segments = op.segments
    if not segments:
        if doc.missing:
            doc.value = None
        result, problem = _append_to_target(doc.value, op.value, "root")
        if problem is not None:
            return problem
        doc.value = result
        doc.missing = False
        return None
    if not isinstance(doc.value, dict):
        # Checked before anything is created, so a failed append leaves the value intact.
        # Unlike the other ops, the engine labels the path in bracketed form, even `[a]`.
        return _target_not_object("append", f"[{', '.join(segments)}]", doc.value)
    *parents, leaf = segments
    parent = _walk_or_create(doc.value, tuple(parents))
    # The engine clears the missing flag for any path append, even one that fails below.
    doc.missing = False
    if leaf not in parent:
        # A missing first-level key starts by value kind; a missing nested leaf is always
        # an array (engine issue #1552).
        parent[leaf] = _initial(op.value) if not parents else [fresh_copy(op.value)]
        return None
    result, problem = _append_to_target(parent[leaf], op.value, leaf)
    if problem is not None:
        return problem
    parent[leaf] = result
    return None


def _append_to_target(target: Any, value: Any, label: str) -> tuple[Any, _OpError]:
    """Return ``(target with value appended, None)`` or ``(None, error)``.

    Arrays are extended in place (an array value is pushed as one element), strings
    concatenated, and null starts from scratch like a missing key.
    """
    if isinstance(target, list):
        target.append(fresh_copy(value))
        return target, None
    if isinstance(target, str):
        if isinstance(value, str):
            return target + value, None
        return None, (
            "append.type_mismatch",
            f"Expected string append value at path '{label}', got {json_type_name(value)}.",
        )
    if target is None:
        return _initial(value), None
    return None, (
        "append.type_mismatch",
        f"Cannot append at path '{label}': target is {json_type_name(target)}, "
        "expected array, string, null, or missing field.",
    )


def _initial(value: Any) -> Any:
    """Start an append target from nothing: a string stays a string, else ``[value]``."""
    return value if isinstance(value, str) else [fresh_copy(value)]


def _apply_remove(doc: _Document, op: ParsedOp) -> _OpError:
    if not op.segments:
        doc.value = None
    elif isinstance(doc.value, dict):
        doc.value.pop(op.segments[0], None)  # absent: silent and idempotent
    else:
        return _target_not_object(op.kind, op.segments[0], doc.value)
    doc.missing = False
    return None


_HANDLERS = {
    "set": _apply_set,
    "merge": _apply_merge,
    "increment": lambda doc, op: _apply_arithmetic(doc, op, op.by),
    "decrement": lambda doc, op: _apply_arithmetic(doc, op, -op.by),
    "append": _apply_append,
    "remove": _apply_remove,
}
