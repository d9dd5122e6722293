"""The iii engine's wire format, as ``evstate serve`` speaks it (docs/protocol.md).

Frame decoding with strict JSON, field checks with serde-style messages, frame builders
for what the engine sends, and the mapping of evstate errors to the wire's error body
``{"code", "message"}``. No I/O here: the connection and routing modules use these.
"""

from __future__ import annotations

import json
import re
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, Final

from evstate.core.functions import serde_type
from evstate.errors import Error
from evstate.values import printable_text

__all__ = [
    "CallError",
    "DESERIALIZATION_ERROR",
    "ENQUEUE_ERROR",
    "FUNCTION_NOT_FOUND",
    "FrameError",
    "INVOCATION_FAILED",
    "INVOCATION_STOPPED",
    "Message",
    "NO_RESULT",
    "TRIGGER_REGISTRATION_FAILED",
    "decode_frame",
    "encode",
    "error_body",
    "error_of",
    "function_not_found",
    "invocation_result",
    "invocation_result_text",
    "optional_str",
    "reply_text",
    "required_str",
    "sniff_invocation_id",
    "stopped",
]

# Error codes the engine itself produces.
FUNCTION_NOT_FOUND: Final = "function_not_found"
INVOCATION_STOPPED: Final = "invocation_stopped"
INVOCATION_FAILED: Final = "invocation_failed"
DESERIALIZATION_ERROR: Final = "deserialization_error"
TRIGGER_REGISTRATION_FAILED: Final = "trigger_registration_failed"
ENQUEUE_ERROR: Final = "enqueue_error"

Message = str | bytes | bytearray | memoryview
"""One WebSocket message as received (text, or the raw bytes of a frame)."""

NO_RESULT: Any = object()
"""Marker: an ``invocationresult`` without a ``result`` key (a function returning None)."""


class CallError(Exception):
    """An invocation that ended with the wire's error body ``{"code", "message"}``.

    Raised by the router for engine-side failures (unknown function, a worker that went
    away mid-call) and for the error a worker answered with, which is relayed unchanged
    (``body`` keeps extra keys such as ``stacktrace``).
    """

    def __init__(self, code: str, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.body = body if body is not None else {"code": code, "message": message}


def stopped() -> CallError:
    """The engine's error for an invocation whose worker went away."""
    return CallError(INVOCATION_STOPPED, "Invocation stopped")


def function_not_found(function_id: str, namespace: str = "default") -> CallError:
    """The engine's ``function_not_found`` error (the engine's wording)."""
    return CallError(
        FUNCTION_NOT_FOUND, f"Function {function_id} not found in namespace {namespace}"
    )


class FrameError(Exception):
    """A frame that does not decode or has a field of the wrong type.

    ``invocation_id`` and ``function_id`` are what could be read of the frame, so that a
    caller waiting on an invocation gets an error answer instead of a timeout.
    """

    def __init__(
        self, message: str, *, invocation_id: str | None = None, function_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.invocation_id = invocation_id
        self.function_id = function_id


def _reject_constant(name: str) -> Any:
    # serde_json refuses NaN and Infinity; so does the engine, so we do too.
    raise ValueError(f"{name} is not valid JSON")


def _not_json(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON data")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_encoder = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_not_json
)
if c_make_encoder is not None:
    # JSONEncoder.encode builds a C encoder on every call; a frame is encoded per call,
    # so build it once. No cycle check (markers=None): frames hold decoded JSON only.
    _c_encode = c_make_encoder(
        None, _not_json, encode_basestring, None, ":", ",", False, False, False
    )

    def encode(frame: Any) -> str:
        """Compact JSON text of a frame (UTF-8 kept; NaN refused with ValueError)."""
        return "".join(_c_encode(frame, 0))

else:  # pragma: no cover - interpreters without the C accelerator

    def encode(frame: Any) -> str:
        """Compact JSON text of a frame (UTF-8 kept; NaN refused with ValueError)."""
        return _encoder.encode(frame)


_INVOCATION_ID_RE = re.compile(r'"invocation_id"\s*:\s*"([^"\\]{1,128})"')


def sniff_invocation_id(raw: Message) -> str | None:
    """Best effort: the ``invocation_id`` of a frame that is not valid JSON, or None."""
    text = raw if isinstance(raw, str) else bytes(raw[:65536]).decode("utf-8", "replace")
    match = _INVOCATION_ID_RE.search(text[:65536])
    return match.group(1) if match else None


def decode_frame(raw: Message) -> dict[str, Any]:
    """Decode one WebSocket message into a frame: a JSON object with a string ``type``.

    Binary messages carrying UTF-8 JSON are accepted, as by the engine.

    Raises:
        FrameError: not UTF-8, not JSON, not an object, or no string ``type``.
    """
    try:
        text = raw if isinstance(raw, str) else str(raw, "utf-8")
        frame = _decoder.decode(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(
            f"Failed to decode message: {exc}", invocation_id=sniff_invocation_id(raw)
        ) from None
    except RecursionError:  # nested deeper than Python's stack: serde's limit is 128
        raise FrameError(
            "Failed to decode message: recursion limit exceeded",
            invocation_id=sniff_invocation_id(raw),
        ) from None
    if ("\\ud" in text or "\\uD" in text) and _holds_lone_surrogate(frame):
        # JSON may escape half a surrogate pair; no UTF-8 text (and no Rust String) can
        # hold it, so the engine refuses the frame, and so does evstate.
        raise FrameError(
            "Failed to decode message: lone surrogate in a string (invalid unicode code point)",
            invocation_id=sniff_invocation_id(raw),
        )
    if not isinstance(frame, dict):
        raise FrameError(
            f"Failed to decode message: invalid type: {serde_type(frame)}, expected an object"
        )
    kind = frame.get("type")
    if type(kind) is not str:
        raise FrameError(
            "Failed to decode message: missing field `type`"
            if kind is None
            else f"Failed to decode message: invalid type: {serde_type(kind)} for `type`",
            invocation_id=_str_or_none(frame.get("invocation_id")),
            function_id=_str_or_none(frame.get("function_id")),
        )
    return frame


def _holds_lone_surrogate(node: Any) -> bool:
    """True if a string anywhere in ``node`` (a decoded frame) has no UTF-8 form."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and printable_text(item) != item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _str_or_none(value: object) -> str | None:
    return value if type(value) is str else None


def required_str(frame: dict[str, Any], name: str, *, non_empty: bool = False) -> str:
    """``frame[name]`` as a string.

    Raises:
        FrameError: missing, not a string, or (``non_empty``) empty.
    """
    value = frame.get(name)
    if type(value) is not str:
        detail = (
            f"missing field `{name}`"
            if value is None
            else f"invalid type: {serde_type(value)}, expected a string for `{name}`"
        )
        raise _field_error(frame, detail)
    if non_empty and not value:
        raise _field_error(frame, f"`{name}` must not be empty")
    return value


def optional_str(frame: dict[str, Any], name: str) -> str | None:
    """``frame[name]`` as a string, or None when absent or null.

    Raises:
        FrameError: present but not a string.
    """
    value = frame.get(name)
    if value is None or type(value) is str:
        return value
    raise _field_error(frame, f"invalid type: {serde_type(value)}, expected a string for `{name}`")


def _field_error(frame: dict[str, Any], detail: str) -> FrameError:
    return FrameError(
        f"Failed to deserialize {frame.get('type')} message: {detail}",
        invocation_id=_str_or_none(frame.get("invocation_id")),
        function_id=_str_or_none(frame.get("function_id")),
    )


def error_body(code: str, message: str) -> dict[str, Any]:
    """The wire's ``ErrorBody``."""
    return {"code": code, "message": message}


def error_of(exc: BaseException) -> dict[str, Any]:
    """The error body for an exception raised while serving a call.

    evstate errors keep their iii code (``deserialization_error``, ``VALUE_TOO_LARGE``,
    ``SET_ERROR``, ...); a :class:`CallError` keeps the body it carries; anything else is
    a bug in a built-in function, reported as ``invocation_failed``.
    """
    if isinstance(exc, CallError):
        return exc.body
    if isinstance(exc, Error):
        return error_body(exc.code, exc.message)
    return error_body(INVOCATION_FAILED, f"{type(exc).__name__}: {exc}")


def invocation_result_text(
    invocation_id: str,
    function_id: str,
    result: Any = NO_RESULT,
    error: dict[str, Any] | None = None,
) -> str:
    """:func:`invocation_result`, encoded: the same JSON, built without the dict.

    Raises:
        ValueError, TypeError: ``result`` or ``error`` is not JSON data.
    """
    head = (
        '{"type":"invocationresult","invocation_id":'
        + encode_basestring(invocation_id)
        + ',"function_id":'
        + encode_basestring(function_id)
    )
    if error is not None:
        return head + ',"error":' + encode(error) + "}"
    if result is NO_RESULT or result is None:
        return head + "}"
    return head + ',"result":' + encode(result) + "}"


def reply_text(
    invocation_id: str,
    function_id: str,
    result: Any = NO_RESULT,
    error: dict[str, Any] | None = None,
) -> str:
    """:func:`invocation_result_text`, never failing: every call gets an answer.

    A result that is not JSON data (a worker's) is answered with a ``serialization_error``.
    """
    try:
        return invocation_result_text(invocation_id, function_id, result, error)
    except (ValueError, TypeError) as exc:
        error = error_body("serialization_error", str(exc))
        return invocation_result_text(invocation_id, function_id, error=error)


def invocation_result(
    invocation_id: str,
    function_id: str,
    result: Any = NO_RESULT,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An ``invocationresult`` frame; with ``NO_RESULT`` (or None) it has no ``result`` key.

    The engine omits ``result`` for a function that returned nothing;
    the SDKs read the absence as None.
    """
    frame: dict[str, Any] = {
        "type": "invocationresult",
        "invocation_id": invocation_id,
        "function_id": function_id,
    }
    if error is not None:
        frame["error"] = error
    elif result is not NO_RESULT and result is not None:
        frame["result"] = result
    return frame
