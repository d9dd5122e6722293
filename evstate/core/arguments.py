"""Checks of the arguments every store kind takes: names, times and revisions.

One place for the rules, so the file store, the redis store and the follower reject the
same inputs with the same :class:`~evstate.errors.InvalidRequestError` text.
"""

from __future__ import annotations

from datetime import datetime

from evstate.errors import InvalidRequestError

__all__ = ["check_name", "check_names", "check_revision", "time_ms"]


def check_name(what: str, name: object) -> None:
    """Raise InvalidRequestError unless ``name`` (a scope or a key) is a valid Unicode str.

    A str holding a lone surrogate (``"x\ud800"``, or undecodable bytes smuggled in as
    surrogate escapes) has no UTF-8 form, so no log, snapshot or wire frame could carry it:
    it is refused here, before anything is written, by every store kind alike.
    """
    if type(name) is not str:
        raise InvalidRequestError(
            f"{what} must be a str, got {type(name).__name__}: {name!r}"[:200]
        )
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequestError(
                f"{what} is not valid Unicode (it holds a lone surrogate): {name!r}"[:200]
            ) from None


def check_names(scope: object, key: object) -> None:
    """:func:`check_name` of ``scope`` and ``key``, with a fast path for ASCII strings.

    Plain ASCII ``str`` names (nearly all of them) are valid without encoding them; this is
    on the hot path of ``get`` and ``set``.
    """
    if type(scope) is not str or type(key) is not str or not (scope.isascii() and key.isascii()):
        check_name("scope", scope)
        check_name("key", key)


def time_ms(when: datetime | float | int) -> int:
    """A ``datetime``, or seconds since the epoch, as milliseconds since the epoch.

    Raises:
        InvalidRequestError: neither form (a bool is neither).
    """
    if isinstance(when, datetime):
        return int(when.timestamp() * 1000)
    if isinstance(when, int | float) and not isinstance(when, bool):
        return int(when * 1000)
    raise InvalidRequestError(f"a time must be a datetime or seconds since the epoch, got {when!r}")


def check_revision(revision: object, *, low: int = 0, what: str = "revision") -> int:
    """``revision`` if it is an ``int`` of at least ``low``, else InvalidRequestError."""
    if type(revision) is not int or revision < low:
        raise InvalidRequestError(f"{what} must be an int >= {low}, got {revision!r}")
    return revision
