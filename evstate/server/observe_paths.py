"""Filter paths and the JSON values they reach (the observer filter language).

A path is ``root("." segment)*``: the root is ``input``, ``output``, ``error``, ``caller`` or
``metadata`` (``@``, the current element, inside ``$any`` only); a backslash escapes a
dot or a backslash in a segment. A segment selects an object member by name, or an array
element when it is a canonical decimal (``0``, ``7``, not ``07``). Where nothing is found
the path is :data:`ABSENT`, which is not ``null``.

Values compare as JSON: numbers as doubles (``1 == 1.0``; a boolean is no number), strings
by code point, arrays element by element, objects member by member; no coercion.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = [
    "ABSENT",
    "ELEMENT",
    "MAX_PATH_SEGMENTS",
    "PathError",
    "ROOTS",
    "Resolver",
    "compile_path",
    "json_equal",
    "number",
]

MAX_PATH_SEGMENTS: Final = 16
"""Segments after a path's root."""
ROOTS: Final = frozenset({"input", "output", "error", "caller", "metadata"})
ELEMENT: Final = "@"
_INDEX = re.compile(r"0|[1-9][0-9]{0,14}")  # longer: no array is that long


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final[Any] = _Absent()
"""What a path resolves to when the document has nothing there."""

Resolver = Callable[[Mapping[str, Any], Any], Any]
"""``resolve(document, element)``: the value a path reaches, or ABSENT."""


class PathError(ValueError):
    """A path the language refuses (the filter compiler reports it as ``INVALID_FILTER``)."""


def _split_path(text: str) -> list[str]:
    """Split a path at its dots: a backslash escapes a dot or a backslash, nothing else."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped not in (".", "\\"):
                shown = "the end" if escaped is None else f"`\\{escaped}`"
                raise PathError(f"path `{text}`: a backslash escapes `.` or `\\`, not {shown}")
            current.append(escaped)
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    if any(part == "" for part in parts):
        raise PathError(f"path `{text}` has an empty segment")
    return parts


def compile_path(text: str, in_any: bool) -> Resolver:
    """The resolver of a filter path (``in_any``: inside ``$any``, where paths start at ``@``).

    Raises:
        PathError: an unknown root, ``@`` outside ``$any``, an empty segment, a bad escape,
            or more than MAX_PATH_SEGMENTS segments after the root.
    """
    root, *segments = _split_path(text)
    if in_any and root != ELEMENT:
        raise PathError(f"path `{text}`: inside `$any`, paths start at `@` (the element)")
    if not in_any and root not in ROOTS:
        raise PathError(
            f"path `{text}`: `{root}` is not a root (input, output, error, caller, metadata)"
            if root != ELEMENT
            else f"path `{text}`: `@` is only meaningful inside `$any`"
        )
    if len(segments) > MAX_PATH_SEGMENTS:
        raise PathError(
            f"path `{text}` has {len(segments)} segments after its root (limit {MAX_PATH_SEGMENTS})"
        )
    steps = tuple((key, int(key) if _INDEX.fullmatch(key) else None) for key in segments)

    def walk(value: Any) -> Any:
        for key, index in steps:
            if isinstance(value, dict):
                value = value.get(key, ABSENT)
            elif isinstance(value, list) and index is not None and index < len(value):
                value = value[index]
            else:
                return ABSENT
        return value

    if root == ELEMENT:
        return lambda _document, element: walk(element)
    return lambda document, _element: walk(document[root]) if root in document else ABSENT


def number(value: Any) -> float | None:
    """The double a JSON number reads as; None for anything else (booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def json_equal(value: Any, literal: Any) -> bool:
    """JSON equality of a document value and a filter literal (the literal bounds the depth)."""
    if literal is None or isinstance(literal, bool | str):
        return type(value) is type(literal) and value == literal
    if isinstance(literal, int | float):
        found = number(value)
        return found is not None and found == float(literal)
    if isinstance(literal, list):
        return (
            isinstance(value, list)
            and len(value) == len(literal)
            and all(json_equal(v, item) for v, item in zip(value, literal, strict=True))
        )
    if isinstance(literal, dict):
        return (
            isinstance(value, dict)
            and len(value) == len(literal)
            and all(key in value and json_equal(value[key], item) for key, item in literal.items())
        )
    return False
