"""The one exception hierarchy of evstate.

Every error evstate raises on purpose is an :class:`Error`. Errors that travel over the
iii wire carry the iii error code in ``code``::

    Error                                 code
    ├── InvalidRequestError (ValueError)  deserialization_error  bad payload, op, field type
    │   ├── InvalidValueError             deserialization_error  value is not JSON data
    │   ├── ValueTooLargeError            VALUE_TOO_LARGE        over max_value_bytes
    │   ├── InvalidCursorError            INVALID_CURSOR         list_entries: bad cursor
    │   ├── InvalidPageLimitsError        INVALID_PAGE_LIMITS    list_entries: bad limits
    │   └── RowTooLargeError              ROW_TOO_LARGE          one entry over max_bytes
    ├── CompareFailedError                CAS_FAILED             a batch's compare-and-set
    ├── ListingCapacityError              SNAPSHOT_CAPACITY      too many open listings
    ├── FunctionNotFoundError             function_not_found     unknown id in call()
    ├── ConfigError (ValueError)          config_error           config problems, all listed
    ├── StoreClosedError                  store_closed           you closed the store
    ├── StoreLockedError                  store_locked           another process owns the dir
    ├── StorageError (OSError)            storage_error          the disk failed us
    │   ├── StoreFailedError              store_failed           failed fsync: read-only
    │   └── BackendUnavailableError       backend_unavailable    Redis unreachable: retry
    ├── CorruptionError                   corruption             bad data (path, offset)
    ├── HistoryCompactedError (LookupError) history_compacted    before the retention horizon
    └── TriggerTimeoutError (TimeoutError)  trigger_timeout      wait_for_triggers ran out

A missing key is not an error: ``get`` returns ``None``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BackendUnavailableError",
    "CompareFailedError",
    "ConfigError",
    "CorruptionError",
    "Error",
    "FunctionNotFoundError",
    "HistoryCompactedError",
    "InvalidRequestError",
    "InvalidCursorError",
    "InvalidPageLimitsError",
    "InvalidValueError",
    "ListingCapacityError",
    "RowTooLargeError",
    "StorageError",
    "StoreClosedError",
    "StoreFailedError",
    "StoreLockedError",
    "TriggerTimeoutError",
    "ValueTooLargeError",
]


class Error(Exception):
    """Root of every evstate exception.

    ``code`` is the iii error code the failure maps to on the wire; ``message`` the text.
    """

    default_code: ClassVar[str] = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class InvalidRequestError(Error, ValueError):
    """A request could not be decoded: missing field, wrong type, unknown op."""

    default_code = "deserialization_error"


class InvalidValueError(InvalidRequestError):
    """A value is not JSON-compatible data; ``path`` names the offending place (``$.a[2]``)."""

    def __init__(self, message: str, *, path: str = "$", code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.path = path


class ValueTooLargeError(InvalidRequestError):
    """A value is larger than ``max_value_bytes`` (iii code ``VALUE_TOO_LARGE``)."""

    default_code = "VALUE_TOO_LARGE"


class InvalidCursorError(InvalidRequestError):
    """A ``list_entries`` cursor that cannot be continued (iii code ``INVALID_CURSOR``).

    It is malformed, was used already, belongs to another scope or other limits, or names
    a revision the store no longer retains.
    """

    default_code = "INVALID_CURSOR"


class InvalidPageLimitsError(InvalidRequestError):
    """``limit`` or ``max_bytes`` of ``list_entries`` is out of range (``INVALID_PAGE_LIMITS``)."""

    default_code = "INVALID_PAGE_LIMITS"


class RowTooLargeError(InvalidRequestError):
    """One entry cannot fit in a ``list_entries`` page of ``max_bytes`` (``ROW_TOO_LARGE``).

    An entry is never skipped: list again with a larger ``max_bytes``. The message does not
    name the key.
    """

    default_code = "ROW_TOO_LARGE"


class CompareFailedError(Error):
    """A batch's ``compare_and_set`` did not match: the whole batch was discarded.

    ``index`` is the position of that change in the batch; ``scope``, ``key`` and
    ``current`` (the value there, ``None`` when absent) say what was found.
    """

    default_code = "CAS_FAILED"

    def __init__(self, message: str, *, index: int, scope: str, key: str, current: object) -> None:
        super().__init__(message)
        self.index = index
        self.scope = scope
        self.key = key
        self.current = current


class ListingCapacityError(Error):
    """Too many ``list_entries`` listings are open at once (iii code ``SNAPSHOT_CAPACITY``).

    Open listings are never evicted while in use; finish one, or retry once one has been
    idle for the listing timeout.
    """

    default_code = "SNAPSHOT_CAPACITY"


class FunctionNotFoundError(Error, LookupError):
    """``call()`` was given a function id evstate does not serve."""

    default_code = "function_not_found"


class ConfigError(Error, ValueError):
    """A configuration is invalid. ``problems`` lists every problem as ``"location: text"``."""

    default_code = "config_error"

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        text = "invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(text)


class StoreClosedError(Error):
    """The store was closed; open it again to use it."""

    default_code = "store_closed"


class StoreLockedError(Error):
    """Another process (or another Store in this process) has the directory open for writing."""

    default_code = "store_locked"


class StorageError(Error, OSError):
    """An I/O operation failed; the write it belonged to was not acknowledged."""

    default_code = "storage_error"


class StoreFailedError(StorageError):
    """An fsync failed earlier; the store refuses writes until it is reopened.

    After a failed fsync the kernel may have dropped the dirty pages, so retrying the fsync
    and acknowledging would lie (the "fsyncgate" lesson). Reads keep working.
    """

    default_code = "store_failed"


class CorruptionError(Error):
    """A file holds data that fails its checksum or its framing, not at a torn tail.

    ``path`` and ``offset`` say where. evstate never drops such data silently.
    """

    default_code = "corruption"

    def __init__(self, message: str, *, path: str = "", offset: int | None = None) -> None:
        where = path + (f" at offset {offset}" if offset is not None else "")
        super().__init__(f"{message} ({where})" if where else message)
        self.path = path
        self.offset = offset


class HistoryCompactedError(Error, LookupError):
    """The requested revision or time is older than the retained history.

    ``horizon`` is the oldest revision that can still be asked for.
    """

    default_code = "history_compacted"

    def __init__(self, message: str, *, horizon: int) -> None:
        super().__init__(message)
        self.horizon = horizon


class TriggerTimeoutError(Error, TimeoutError):
    """``wait_for_triggers`` timed out before every trigger reached the revision."""

    default_code = "trigger_timeout"


class BackendUnavailableError(StorageError):
    """The backend (Redis) cannot be reached, is restarting, or refuses writes; retry later.

    Nothing was written by a call that raises this before the backend confirmed it, unless
    the message says the outcome is unknown. The store reconnects by itself on a later call.
    """

    default_code = "backend_unavailable"
