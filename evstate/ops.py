"""Update ops for ``state::update``: the wire shapes and their parsing.

A port of the iii engine's update ops, in two layers (the second is
:mod:`evstate.ops_apply`):

* :func:`parse_ops` checks the *wire shape*. A shape problem fails the
  whole call with :class:`InvalidRequestError` (code ``deserialization_error``) whose message
  is worded like serde's, e.g. ``missing field `by```. The caller adds the function prefix:
  ``Failed to deserialize input for state::update: <message>``.
* :func:`apply_update_ops` applies well-formed ops best-effort, in order.
  A semantic problem (bad path, wrong target type) never raises: it becomes an entry in the
  returned error list and the op is skipped.

Paths are literal keys: dots never separate (``"user.name"`` is one key).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evstate.errors import InvalidRequestError
from evstate.values import (
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
    "fresh_copy",
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
            wire["value"] = fresh_copy(wire["value"])
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


def fresh_copy(value: Any) -> Any:
    """Copy JSON data so the document never shares containers with an op."""
    if isinstance(value, dict):
        return {key: fresh_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [fresh_copy(item) for item in value]
    return value
