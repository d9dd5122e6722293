"""The retention policy: how much history a store keeps (docs/config.md, ``retention``).

One rule for every store kind: the cutoff is the newest revision the policy lets go of
(``revisions``: keep that many; ``duration``: keep what is younger), never past the cursor
of a registered trigger (a projection still reading must not lose its events).
"""

from __future__ import annotations

from collections.abc import Callable

from evstate.config import retention_limits

__all__ = ["retention_cutoff"]


def retention_cutoff(
    policy: object,
    head: int,
    now_ms: int,
    first_revision_from_time: Callable[[int, int], int],
    pin: int | None,
) -> int:
    """The newest revision ``policy`` lets go of at ``head`` (0: keep everything).

    ``first_revision_from_time(ms, head)`` is the log source's; ``pin`` the lowest cursor
    of a registered trigger (None when there is none).
    """
    max_revisions, max_age = retention_limits(policy)
    cutoff = 0
    if max_revisions is not None:
        cutoff = max(cutoff, head - max_revisions)
    if max_age is not None and head:
        cutoff = max(cutoff, first_revision_from_time(now_ms - max_age, head) - 1)
    if pin is not None:
        cutoff = min(cutoff, pin)
    return max(min(cutoff, head), 0)
