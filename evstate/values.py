"""JSON-compatible values: what may be stored, and how it is encoded.

A value is *JSON data* when it is built only from ``dict`` (with ``str`` keys), ``list``,
``str``, ``int``, ``float``, ``bool`` and ``None``; subclasses of these (``StrEnum``,
``IntEnum``, ``OrderedDict``) are accepted and come back as the plain base type. On top of
the type rule:

* floats must be finite (JSON has no NaN or Infinity);
* ints must lie in ``[-2**63, 2**64 - 1]``, the range serde_json holds exactly (i64 or u64);
* strings and keys must be valid Unicode (no lone surrogates), as a Rust ``String`` must;
* containers may nest at most :data:`MAX_NESTING` deep. This also turns a reference cycle
  into an error instead of a hang, and keeps cbor2 and ``json`` below their recursion limits.

Values are stored as CBOR (:func:`encode_value`); every :func:`decode_value` builds a new
object, which is how the store keeps callers from sharing mutable state with it.

The module also spells values the way the engine's messages do: :func:`json_type_name`
for per-op errors, :func:`serde_unexpected` for serde's ``invalid type`` errors.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import cbor2

from evstate.errors import CorruptionError, InvalidValueError

__all__ = [
    "INT_MAX",
    "INT_MIN",
    "MAX_NESTING",
    "DEADLINE_MARK",
    "deadline_of",
    "decode_value",
    "encode_value",
    "expired",
    "strip_deadline",
    "with_deadline",
    "json_equal",
    "json_size",
    "json_type_name",
    "printable_text",
    "rust_debug_str",
    "serde_unexpected",
    "validate_value",
]

MAX_NESTING = 512
"""Deepest allowed container nesting; a top-level dict or list is at depth 1."""

INT_MIN = -(2**63)
"""Smallest storable integer (Rust ``i64::MIN``)."""

INT_MAX = 2**64 - 1
"""Largest storable integer (Rust ``u64::MAX``)."""

# Update ops may place a validated value below a path of up to 32 segments, plus one
# wrapping array (``append``), so stored values can nest somewhat deeper than anything
# validate_value accepts; the decoder must still read them back.
_DECODE_MAX_DEPTH = MAX_NESTING + 64

_ALLOWED = "allowed: dict with str keys, list, str, int, float, bool, None"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def validate_value(value: object, *, where: str = "value", root: str = "$") -> None:
    """Check that ``value`` is JSON data that evstate can store.

    ``where`` is the noun the message starts with and ``root`` the JSONPath of ``value``
    itself, so a caller validating part of a larger document can name the whole path
    (``validate_value(v, where="op value", root="$.ops[2].value")``).

    Returns ``None`` when the value is acceptable.

    Raises:
        InvalidValueError: the first problem in document order, e.g.
            ``value at $.tags[1] is a set, which is not JSON data (allowed: ...)``;
            ``error.path`` holds the JSONPath (``$``, ``$.a``, ``$["odd key"]``, ``$.items[2]``).
    """
    # Exact-type fast path first: it runs on every write. Only when it sees something
    # unusual (a problem, or merely a subclass) does the slow, path-tracking walk run.
    if not _is_plain_json(value):
        _raise_first_problem(value, where, root)


def _is_plain_json(value: Any) -> bool:
    """Return True if ``value`` is valid JSON data made only of the exact builtin types."""
    t = type(value)
    if t is str:
        return value.isascii() or _is_valid_unicode(value)
    if t is bool or value is None:
        return True
    if t is int:
        return INT_MIN <= value <= INT_MAX  # type: ignore[no-any-return]
    if t is float:
        return value - value == 0.0  # type: ignore[no-any-return]  # nan/inf give nan
    if t is not dict and t is not list:
        return False
    # One loop over the items of either container, with the checks inline: this runs on
    # every write, and a helper call per item would cost ~30%. Dict keys are checked first.
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop = stack.pop
    push = stack.append
    while stack:
        node, depth = pop()
        if depth > MAX_NESTING:
            return False
        items: Any = node
        if type(node) is dict:
            for key in node:
                if type(key) is not str or not (key.isascii() or _is_valid_unicode(key)):
                    return False
            items = node.values()
        for item in items:
            ti = type(item)
            if ti is str:
                if not (item.isascii() or _is_valid_unicode(item)):
                    return False
            elif ti is bool or item is None:
                pass
            elif ti is int:
                if not INT_MIN <= item <= INT_MAX:
                    return False
            elif ti is float:
                if item - item != 0.0:
                    return False
            elif ti is dict or ti is list:
                push((item, depth + 1))
            else:
                return False
    return True


def _is_valid_unicode(text: str) -> bool:
    """Return True if ``text`` encodes to UTF-8, i.e. holds no lone surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _raise_first_problem(value: object, where: str, root: str) -> None:
    """Walk ``value`` in document order and raise for the first problem found, if any."""
    # Iterative so that a deep (or cyclic) value cannot hit the recursion limit here.
    stack: list[tuple[object, str, int]] = [(value, root, 0)]
    while stack:
        node, path, depth = stack.pop()
        problem = _scalar_problem(node)
        if problem is not None:
            if problem:
                raise InvalidValueError(f"{where} at {path} {problem}", path=path)
            continue
        if depth + 1 > MAX_NESTING:
            raise InvalidValueError(
                f"{where} at {path} nests containers deeper than {MAX_NESTING} levels "
                "(a reference cycle, or a structure too deep to store)",
                path=path,
            )
        children: list[tuple[object, str, int]] = []
        if isinstance(node, dict):
            for key, item in node.items():
                if not isinstance(key, str):
                    raise InvalidValueError(
                        f"{where} at {path} has the key {key!r} of type "
                        f"{_type_label(key)}, which is not JSON data (object keys must be str)",
                        path=path,
                    )
                if not _is_valid_unicode(key):
                    raise InvalidValueError(
                        f"{where} at {path} has the key {key!r}, which holds a lone "
                        "surrogate and is not valid Unicode",
                        path=path,
                    )
                children.append((item, _child_path(path, key), depth + 1))
        else:
            assert isinstance(node, list)
            for index, item in enumerate(node):
                children.append((item, f"{path}[{index}]", depth + 1))
        stack.extend(reversed(children))


def _scalar_problem(node: object) -> str | None:
    """Describe what is wrong with a non-container ``node``.

    Returns ``None`` for a dict or list (walk into it), ``""`` for a valid scalar, or the
    problem text.
    """
    if node is None or isinstance(node, bool):
        return ""
    if isinstance(node, str):
        if _is_valid_unicode(node):
            return ""
        return "is a string holding a lone surrogate, which is not valid Unicode"
    if isinstance(node, int):
        if INT_MIN <= node <= INT_MAX:
            return ""
        return (
            f"is the integer {node}, outside the storable range "
            "[-2**63, 2**64-1] (JSON numbers are held as i64 or u64)"
        )
    if isinstance(node, float):
        if node - node == 0.0:
            return ""
        return f"is the float {node!r}, which is not JSON data (JSON numbers are finite)"
    if isinstance(node, dict | list):
        return None
    return f"is {_type_label(node, article=True)}, which is not JSON data ({_ALLOWED})"


def _type_label(obj: object, *, article: bool = False) -> str:
    """Name ``obj``'s type for a message: ``set``, ``a set``, ``a datetime.datetime``."""
    cls = type(obj)
    name = cls.__qualname__
    if cls.__module__ != "builtins":
        name = f"{cls.__module__}.{cls.__qualname__}"
    if not article:
        return name
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _child_path(path: str, key: str) -> str:
    """Append a dict key to a JSONPath: ``$.a`` for identifiers, else ``$["odd key"]``."""
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def printable_text(text: str) -> str:
    """``text`` with whatever UTF-8 cannot encode replaced by U+FFFD.

    For texts that come from outside and only travel (error messages, exception texts
    holding undecodable bytes as surrogate escapes): they must never make an encoder fail.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def encode_value(value: Any) -> bytes:
    """Encode a validated value as CBOR bytes.

    Only call this after :func:`validate_value` accepted ``value``: cbor2's encoder has no
    depth guard and crashes the interpreter on very deep nesting.

    Returns the CBOR encoding; dict subclasses, enums and the like encode as their plain
    base type.
    """
    data: bytes = cbor2.dumps(value)
    return data


DEADLINE_MARK = 0xFF
"""First byte of a stored value that has an expiry deadline (docs/format.md section 2).

``0xFF`` (CBOR "break") can never begin a CBOR item, so a stored value is either the
encoded value itself, or ``FF`` + the deadline (u64 big-endian, ms since the epoch) + the
encoded value. The deadline travels with the value through the log, snapshots, replay,
followers and restores.
"""
_MARK = bytes([DEADLINE_MARK])


def with_deadline(encoded: bytes, deadline_ms: int) -> bytes:
    """The stored form of an encoded value that expires at ``deadline_ms``."""
    return _MARK + deadline_ms.to_bytes(8, "big") + encoded


def deadline_of(stored: bytes) -> int | None:
    """The expiry deadline (ms) of a stored value, or None when it has none."""
    if stored[:1] != _MARK:
        return None
    return int.from_bytes(stored[1:9], "big")


def expired(stored: bytes, now_ms: int) -> bool:
    """True when the stored value has a deadline at or before ``now_ms``."""
    return stored[:1] == _MARK and int.from_bytes(stored[1:9], "big") <= now_ms


def strip_deadline(stored: bytes) -> bytes:
    """The encoded value of a stored value (without its deadline, if any)."""
    return stored[9:] if stored[:1] == _MARK else stored


def decode_value(data: bytes) -> Any:
    """Decode CBOR bytes written by :func:`encode_value` into a new Python object.

    A stored value with a deadline (:data:`DEADLINE_MARK`) decodes to its value. Returns a
    freshly built object on every call, sharing nothing with earlier results.

    Raises:
        CorruptionError: ``data`` is not a CBOR item, or nests absurdly deep. The
            message names no file; a caller that knows where ``data`` came from should
            re-raise with ``path`` and ``offset``.
    """
    if data[:1] == _MARK:
        data = data[9:]
    try:
        return cbor2.loads(data, max_depth=_DECODE_MAX_DEPTH)
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise CorruptionError(f"undecodable value: {exc}") from exc


def json_size(value: Any) -> int:
    """Return the size in bytes of the compact UTF-8 JSON text of a validated value.

    This is the measure ``max_value_bytes`` uses, like the engine's
    ``serde_json::to_vec(value).len()`` (float spelling can differ by a few bytes, e.g.
    Python writes ``1e+16`` where Rust writes ``1e16``).
    """
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def json_equal(left: Any, right: Any) -> bool:
    """True when two JSON values are equal as JSON data (compare-and-set's equality).

    Objects compare by their members whatever the key order; arrays element by element;
    numbers by value (``1 == 1.0``: JSON has one number type); ``true`` is never ``1``.
    Iterative, so nesting depth does not matter.
    """
    pending = [(left, right)]
    while pending:
        a, b = pending.pop()
        if type(a) is bool or type(b) is bool:
            if a is not b:
                return False
        elif isinstance(a, int | float) and isinstance(b, int | float):
            if a != b:
                return False
        elif isinstance(a, dict):
            if not isinstance(b, dict) or len(a) != len(b):
                return False
            for name, member in a.items():
                if name not in b:
                    return False
                pending.append((member, b[name]))
        elif isinstance(a, list):
            if not isinstance(b, list) or len(a) != len(b):
                return False
            pending.extend(zip(a, b, strict=True))
        elif type(a) is not type(b) or a != b:
            return False
    return True


def json_type_name(value: Any) -> str:
    """Return the JSON type name of ``value`` as the engine spells it in messages.

    Returns one of ``null``, ``boolean``, ``number``, ``string``, ``array``, ``object``.
    A Python bool is ``boolean``, never ``number``.

    Raises:
        InvalidValueError: ``value`` is not a JSON type at all.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    raise InvalidValueError(
        f"value is {_type_label(value, article=True)}, which is not JSON data ({_ALLOWED})"
    )


# ----------------------------------------------------- Rust spellings for wire error messages


def serde_unexpected(value: object) -> str:
    """Describe ``value`` as serde_json's ``invalid type: ...`` errors do.

    Returns e.g. ``null``, ``boolean `true```, ``integer `5```, ``floating point `1.5```,
    ``string "x"``, ``sequence`` or ``map``; other Python objects as ``Python <type>``.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{_rust_float(value)}`"
    if isinstance(value, str):
        return f"string {rust_debug_str(value)}"
    if isinstance(value, list | tuple):
        return "sequence"
    if isinstance(value, dict):
        return "map"
    return f"Python {type(value).__name__}"


def _rust_float(number: float) -> str:
    """Format a float as Rust's ``ryu`` does (``1.5``, ``2.0``, ``1e16``, ``1.5e-7``)."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    sign = "-" if math.copysign(1.0, number) < 0 else ""
    if number == 0:
        return f"{sign}0.0"
    # repr gives the same shortest round-trip digits as ryu; only the layout differs.
    mantissa, _, exponent = repr(abs(number)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    significant = digits.rstrip("0")
    # The number is int(significant) * 10**scale; its decimal point sits `point` digits in.
    scale = int(exponent or 0) - len(fraction) + (len(digits) - len(significant))
    length = len(significant)
    point = length + scale
    if scale >= 0 and point <= 16:
        text = significant + "0" * scale + ".0"
    elif 0 < point <= 16:
        text = f"{significant[:point]}.{significant[point:]}"
    elif -5 < point <= 0:
        text = "0." + "0" * -point + significant
    elif length == 1:
        text = f"{significant}e{point - 1}"
    else:
        text = f"{significant[0]}.{significant[1:]}e{point - 1}"
    return sign + text


_RUST_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}


def rust_debug_str(text: str) -> str:
    """Return ``text`` quoted and escaped as Rust's ``{:?}`` formats a ``str``."""
    parts = ['"']
    for char in text:
        if char in _RUST_ESCAPES:
            parts.append(_RUST_ESCAPES[char])
        elif char.isprintable():
            parts.append(char)
        else:
            parts.append(f"\\u{{{ord(char):x}}}")
    parts.append('"')
    return "".join(parts)
