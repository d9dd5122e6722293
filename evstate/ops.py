"""Update ops for ``state::update``: the wire shapes, their parsing, and their semantics.

This is a port of the iii engine's ``apply_update_ops`` (reference §3). Two layers:

* :func:`parse_ops` checks the *wire shape* (reference §3.1). A shape problem fails the
  whole call with :class:`InvalidRequestError` (code ``deserialization_error``) whose message
  is worded like serde's, e.g. ``missing field `by```. The caller adds the function prefix:
  ``Failed to deserialize input for state::update: <message>``.
* :func:`apply_update_ops` applies well-formed ops best-effort, in order (reference §3.3).
  A semantic problem (bad path, wrong target type) never raises: it becomes an entry in the
  returned error list and the op is skipped.

Paths are literal keys: dots never separate (``"user.name"`` is one key).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evstate.errors import InvalidRequestError
from evstate.values import (
    INT_MAX,
    INT_MIN,
    json_type_name,
    rust_debug_str,
    serde_unexpected,
    validate_value,
)

__all__ = [
    "DOC_URL",
    "MAX_PATH_DEPTH",
    "MAX_SEGMENT_BYTES",
    "MAX_VALUE_DEPTH",
    "MAX_VALUE_KEYS",
    "OP_TYPES",
    "PROTO_POLLUTION_KEYS",
    "ParsedOp",
    "UpdateOp",
    "apply_update_ops",
    "parse_ops",
]

MAX_PATH_DEPTH = 32
MAX_SEGMENT_BYTES = 256
MAX_VALUE_DEPTH = 16
MAX_VALUE_KEYS = 1024
PROTO_POLLUTION_KEYS = ("__proto__", "constructor", "prototype")
OP_TYPES = ("set", "merge", "increment", "decrement", "append", "remove")
DOC_URL = "https://iii.dev/docs/workers/iii-state#error-codes"

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_U64_MAX = 2**64 - 1
_VARIANTS = ", ".join(f"`{name}`" for name in OP_TYPES)
_FIELD_PATH_OPS = frozenset({"set", "increment", "decrement", "remove"})
_VALUE_OPS = frozenset({"set", "merge", "append"})
_BY_OPS = frozenset({"increment", "decrement"})
# serde reports missing fields in declaration order of the Rust enum variant.
_REQUIRED = {
    "set": ("path",),
    "merge": ("value",),
    "increment": ("path", "by"),
    "decrement": ("path", "by"),
    "append": ("value",),
    "remove": ("path",),
}


# --------------------------------------------------------------------------- wire shapes


@dataclass(frozen=True, slots=True)
class UpdateOp:
    """One update op, as the iii SDKs build it; :meth:`to_dict` gives its wire form.

    Build ops with the constructors (``UpdateOp.increment("logins", 1)``). An ``UpdateOp``
    always has a valid wire shape: construction raises the same errors :func:`parse_ops`
    would. Semantic problems (a non-object merge value, a ``__proto__`` segment) are not
    checked here; like the engine, :func:`apply_update_ops` reports them per op.
    """

    type: str
    path: str | list[str] | None = None
    value: Any = None
    by: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.path, list | tuple):
            object.__setattr__(self, "path", list(self.path))  # own copy: ops are immutable
        if self.type in OP_TYPES:
            if self.type not in _BY_OPS and self.by is not None:
                raise InvalidRequestError(f"field `by` does not belong to a `{self.type}` op")
            if self.type not in _VALUE_OPS and self.value is not None:
                raise InvalidRequestError(f"field `value` does not belong to a `{self.type}` op")
        _parse_item(self._wire_view(), "$.value")

    # The constructors raise InvalidRequestError for a bad path or ``by`` (a float, a bool,
    # an int outside i64) and InvalidValueError for a value that is not JSON data.

    @staticmethod
    def set(path: str, value: Any = None) -> UpdateOp:
        """Return a ``set`` of the first-level key ``path`` (``""``: the whole value)."""
        return UpdateOp("set", path, value)

    @staticmethod
    def merge(path: str | list[str] | tuple[str, ...] | None, value: Any) -> UpdateOp:
        """Return a shallow ``merge`` of the object ``value`` at ``path``.

        ``path`` is ``None``, ``""`` or ``[]`` for the root, a str for a first-level key,
        or a list of literal segments for a nested object.
        """
        return UpdateOp("merge", _as_list(path), value)

    @staticmethod
    def increment(path: str, by: int = 1) -> UpdateOp:
        """Return an ``increment`` of the number at the first-level key ``path`` by ``by``."""
        return UpdateOp("increment", path, by=by)

    @staticmethod
    def decrement(path: str, by: int = 1) -> UpdateOp:
        """Return a ``decrement`` of the number at the first-level key ``path`` by ``by``."""
        return UpdateOp("decrement", path, by=by)

    @staticmethod
    def append(path: str | list[str] | tuple[str, ...] | None, value: Any) -> UpdateOp:
        """Return an ``append`` of ``value`` to the array or string at ``path`` (as for merge)."""
        return UpdateOp("append", _as_list(path), value)

    @staticmethod
    def remove(path: str) -> UpdateOp:
        """Return a ``remove`` of the first-level key ``path`` (``""``: the value becomes null)."""
        return UpdateOp("remove", path)

    def to_dict(self) -> dict[str, Any]:
        """Return the exact iii wire dict, e.g. ``{"type": "increment", "path": "n", "by": 1}``.

        ``merge``/``append`` with ``path=None`` leave ``path`` out; ``set`` always carries
        ``value``. The dict shares no mutable parts with the op.
        """
        wire = self._wire_view()
        if isinstance(wire.get("path"), list):
            wire["path"] = list(wire["path"])
        if "value" in wire:
            wire["value"] = _fresh(wire["value"])
        return wire

    def _wire_view(self) -> dict[str, Any]:
        """Build the wire dict, sharing ``path`` and ``value`` with this op."""
        wire: dict[str, Any] = {"type": self.type}
        if self.path is not None:
            wire["path"] = self.path
        if self.type in _VALUE_OPS:
            wire["value"] = self.value
        if self.by is not None:
            wire["by"] = self.by
        return wire


def _as_list(path: str | list[str] | tuple[str, ...] | None) -> str | list[str] | None:
    return list(path) if isinstance(path, tuple) else path


@dataclass(frozen=True, slots=True)
class ParsedOp:
    """A wire-valid op, normalized for :func:`apply_update_ops`.

    ``segments`` is ``()`` for the root. For ``set``/``increment``/``decrement``/``remove``
    it holds at most the one first-level key; for ``merge``/``append`` the literal segments.
    ``value`` is ``None`` (JSON null) for ops without one; ``by`` is 0 for ops without one.
    """

    kind: str
    segments: tuple[str, ...]
    value: Any = None
    by: int = 0


def parse_ops(raw: object) -> list[ParsedOp]:
    """Check and normalize the ``ops`` field of a ``state::update`` request.

    ``raw`` is a list (or tuple) whose items are :class:`UpdateOp` objects or wire dicts.
    Unknown extra fields in a dict are ignored, as the engine ignores them.

    Returns one :class:`ParsedOp` per item, in order.

    Raises:
        InvalidRequestError: the first wire-shape problem, with serde's wording and no
            prefix, e.g. ``invalid type: floating point `1.5`, expected i64``; the caller
            prepends ``Failed to deserialize input for state::update: ``.
        InvalidValueError: an op value is not JSON data; its path starts at
            ``$.ops[<index>].value``.
    """
    if not isinstance(raw, list | tuple):
        raise InvalidRequestError(f"invalid type: {serde_unexpected(raw)}, expected a sequence")
    parsed: list[ParsedOp] = []
    for index, item in enumerate(raw):
        root = f"$.ops[{index}].value"
        if isinstance(item, UpdateOp):
            # Re-check: the op's path list and value are mutable and may have changed.
            parsed.append(_parse_item(item._wire_view(), root))
        elif isinstance(item, Mapping):
            parsed.append(_parse_item(item, root))
        else:
            raise InvalidRequestError(
                f"invalid type: {serde_unexpected(item)}, expected internally tagged enum UpdateOp"
            )
    return parsed


def _parse_item(item: Mapping[Any, Any], value_root: str) -> ParsedOp:
    """Parse one wire op in serde's order: tag, fields in input order, missing fields."""
    if "type" not in item:
        raise InvalidRequestError("missing field `type`")
    kind = item["type"]
    if not isinstance(kind, str):
        raise InvalidRequestError(
            f"invalid type: {serde_unexpected(kind)}, expected variant identifier"
        )
    if kind not in OP_TYPES:
        raise InvalidRequestError(f"unknown variant `{kind}`, expected one of {_VARIANTS}")
    segments: tuple[str, ...] = ()
    value: Any = None
    by = 0
    for name, field in item.items():
        if name == "path":
            segments = _parse_path(kind, field)
        elif name == "value" and kind in _VALUE_OPS:
            validate_value(field, where=f"{kind} op value", root=value_root)
            value = field
        elif name == "by" and kind in _BY_OPS:
            by = _parse_i64(field)
    for name in _REQUIRED[kind]:
        if name not in item:
            raise InvalidRequestError(f"missing field `{name}`")
    return ParsedOp(kind, segments, value, by)


def _parse_path(kind: str, field: object) -> tuple[str, ...]:
    """Normalize a ``path`` field to segments; ``()`` is the root."""
    if kind in _FIELD_PATH_OPS:
        if not isinstance(field, str):
            raise InvalidRequestError(f"invalid type: {serde_unexpected(field)}, expected a string")
        return (field,) if field else ()
    # merge / append: Option<MergePath>, MergePath = untagged String | Vec<String>.
    if field is None:
        return ()
    if isinstance(field, str):
        return (field,) if field else ()
    if isinstance(field, list | tuple) and all(isinstance(seg, str) for seg in field):
        return tuple(field)
    raise InvalidRequestError("data did not match any variant of untagged enum MergePath")


def _parse_i64(field: object) -> int:
    """Return ``field`` if it is an integer in i64 range, else raise serde's error."""
    if isinstance(field, int) and not isinstance(field, bool):
        if _I64_MIN <= field <= _I64_MAX:
            return int(field)
        if 0 <= field <= _U64_MAX:
            raise InvalidRequestError(f"invalid value: integer `{field}`, expected i64")
        # serde_json reads integers beyond i64/u64 as floating point numbers.
        field = float(field)
    raise InvalidRequestError(f"invalid type: {serde_unexpected(field)}, expected i64")


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
    """Check the path bounds every op shares (reference §3.3, "Path validation")."""
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
        doc.value = _fresh(op.value)
    elif isinstance(doc.value, dict):
        doc.value[op.segments[0]] = _fresh(op.value)
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
        target[key] = _fresh(item)
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
        parent[leaf] = _initial(op.value) if not parents else [_fresh(op.value)]
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
        target.append(_fresh(value))
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
    return value if isinstance(value, str) else [_fresh(value)]


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


def _fresh(value: Any) -> Any:
    """Copy JSON data so the document never shares containers with an op."""
    if isinstance(value, dict):
        return {key: _fresh(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_fresh(item) for item in value]
    return value
