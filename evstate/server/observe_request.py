"""The ``observe`` frame of iii-sdk 0.25, read and checked into an :class:`ObserverSpec`.

What a worker sends (optional fields absent or ``null``)::

    {"type": "observe", "id": str,
     "source": {"function_id": str, "namespace"?: str, "args"?: object, "filters"?: object,
                "capture"?: [str], "on"?: str, "deliver"?: str},
     "target": {"function_id": str, "namespace"?: str},
     "metadata"?: any, "max_fires"?: int, "expires_in_ms"?: int, "max_in_flight"?: int}

:func:`read_observe` answers a spec, or raises :class:`ObserveRefused` with the code the
SDK turns into an ``ObserveRejection``. What it checks is the frame alone; whether the
source and target functions exist and may be observed is the registry's business
(evstate.server.observe).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from evstate.core.functions import serde_type
from evstate.server.observe_filter import MATCH_ALL, Filter, FilterError, compile_filter

__all__ = [
    "CAPTURES",
    "DEFAULT_CAPTURE",
    "INVALID_ARGS",
    "INVALID_OBSERVER",
    "MAX_IN_FLIGHT_CAP",
    "NOT_OBSERVABLE",
    "ONS",
    "ObserveRefused",
    "ObserverSpec",
    "TOO_MANY_OBSERVERS",
    "UNSUPPORTED",
    "read_id",
    "read_observe",
]

# Error codes of an observer refused at creation (``observeresult`` with state ``error``).
INVALID_ARGS: Final = "INVALID_ARGS"  # `args` for a source that takes none
INVALID_OBSERVER: Final = "INVALID_OBSERVER"  # a field missing, of the wrong type, out of range
UNSUPPORTED: Final = "UNSUPPORTED"  # valid iii, but not what evstate serve implements
NOT_OBSERVABLE: Final = "NOT_OBSERVABLE"  # the source registered with `observe.allow: false`
TOO_MANY_OBSERVERS: Final = "TOO_MANY_OBSERVERS"  # the connection holds the maximum already

CAPTURES: Final = frozenset({"input", "output", "error", "caller", "metadata"})
DEFAULT_CAPTURE: Final = ("input", "output", "caller")
ONS: Final = frozenset({"success", "error", "complete"})

MAX_IN_FLIGHT_CAP: Final = 1024
"""Activations of one observer running at once, at most (and when ``max_in_flight`` is unset)."""
_MAX_COUNT: Final = 2**53  # max_fires / expires_in_ms / max_in_flight: JSON-safe integers
_MAX_ID_CHARS: Final = 1024


class ObserveRefused(Exception):
    """An ``observe`` the server does not accept: ``code`` and ``message`` go to the SDK."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ObserverSpec:
    """One observer as requested.

    ``wire`` is the frame without ``type``: a replay of the same observer (same id, same
    ``wire``) is recognised by it.
    """

    id: str
    source: str
    target: str
    filter: Filter
    capture: frozenset[str]
    on: str
    metadata: Any
    max_fires: int | None
    expires_in_ms: int | None
    max_in_flight: int
    args: dict[str, Any] | None
    wire: dict[str, Any]


def _invalid(detail: str) -> ObserveRefused:
    return ObserveRefused(INVALID_OBSERVER, f"Failed to read observe message: {detail}")


def _object(value: Any, where: str, *, required: bool) -> dict[str, Any] | None:
    if value is None and not required:
        return None
    if not isinstance(value, dict):
        found = "nothing" if value is None else serde_type(value)
        raise _invalid(f"`{where}` must be an object, found {found}")
    return value


def _text(holder: dict[str, Any], name: str, where: str, *, required: bool) -> str | None:
    value = holder.get(name)
    if value is None and not required:
        return None
    if type(value) is not str or (required and not value.strip()):
        found = "nothing" if value is None else serde_type(value)
        raise _invalid(f"`{where}.{name}` must be a non-empty string, found {found}")
    return value


def _count(frame: dict[str, Any], name: str) -> int | None:
    value = frame.get(name)
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= _MAX_COUNT:
        shown = serde_type(value) if type(value) is not int else str(value)
        raise _invalid(f"`{name}` must be an integer from 1 to 2^53, found {shown}")
    return value


def read_id(frame: dict[str, Any]) -> str | None:
    """The frame's observer ``id`` if it is usable (a non-empty string of sane length)."""
    value = frame.get("id")
    if type(value) is str and value and len(value) <= _MAX_ID_CHARS:
        return value
    return None


def read_observe(frame: dict[str, Any], observer_id: str) -> ObserverSpec:
    """Check an ``observe`` frame whose id (:func:`read_id`) is ``observer_id``.

    Raises:
        ObserveRefused: ``INVALID_OBSERVER`` (malformed), ``INVALID_FILTER`` (the filter
            language), ``UNSUPPORTED`` (a ``deliver`` other than ``envelope``, a ``capture``
            or ``on`` value this server does not know).
    """
    source = _object(frame.get("source"), "source", required=True)
    target = _object(frame.get("target"), "target", required=True)
    assert source is not None and target is not None
    source_id = _text(source, "function_id", "source", required=True)
    target_id = _text(target, "function_id", "target", required=True)
    assert source_id is not None and target_id is not None
    # One namespace here (docs/protocol.md): a namespace is read, checked and ignored.
    _text(source, "namespace", "source", required=False)
    _text(target, "namespace", "target", required=False)
    args = _object(source.get("args"), "source.args", required=False)

    filters = source.get("filters")
    try:
        compiled = MATCH_ALL if filters is None else compile_filter(filters)
    except FilterError as exc:
        raise ObserveRefused(exc.code, f"source.filters: {exc.message}") from None

    capture_value = source.get("capture")
    if capture_value is None:
        capture = frozenset(DEFAULT_CAPTURE)
    else:
        if not isinstance(capture_value, list) or any(type(c) is not str for c in capture_value):
            raise _invalid("`source.capture` must be an array of strings")
        unknown = sorted(set(capture_value) - CAPTURES)
        if unknown:
            raise ObserveRefused(
                UNSUPPORTED,
                f"source.capture: {unknown[0]!r} is not supported "
                f"(evstate serve captures {', '.join(sorted(CAPTURES))})",
            )
        capture = frozenset(capture_value)

    on = _text(source, "on", "source", required=False) or "success"
    if on not in ONS:
        raise ObserveRefused(
            UNSUPPORTED, f"source.on: {on!r} is not supported (success, error or complete)"
        )
    deliver = _text(source, "deliver", "source", required=False) or "envelope"
    if deliver != "envelope":
        raise ObserveRefused(
            UNSUPPORTED,
            f"source.deliver: {deliver!r} is not supported: "
            "evstate serve delivers the envelope only",
        )

    max_in_flight = _count(frame, "max_in_flight")
    wire = {k: v for k, v in frame.items() if k != "type"}
    return ObserverSpec(
        id=observer_id,
        source=source_id,
        target=target_id,
        filter=compiled,
        capture=capture,
        on=on,
        metadata=frame.get("metadata"),
        max_fires=_count(frame, "max_fires"),
        expires_in_ms=_count(frame, "expires_in_ms"),
        max_in_flight=min(max_in_flight or MAX_IN_FLIGHT_CAP, MAX_IN_FLIGHT_CAP),
        args=args,
        wire=wire,
    )
