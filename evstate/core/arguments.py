"""Checks of the arguments every store kind takes: names, times and revisions.

One place for the rules, so the file store, the redis store and the follower reject the
same inputs with the same :class:`~evstate.errors.InvalidRequestError` text.
"""

from __future__ import annotations

from datetime import datetime

from evstate.errors import InvalidRequestError

__all__ = ["check_name", "check_revision", "time_ms"]


def check_name(what: str, name: object) -> None:
    """Raise InvalidRequestError unless ``name`` (a scope or a key) is a ``str``."""
    if type(name) is not str:
        raise InvalidRequestError(
            f"{what} must be a str, got {type(name).__name__}: {name!r}"[:200]
        )


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
