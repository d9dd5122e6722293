"""Hints on stderr for likely typos: a scope that does not exist while similar ones do.

A read of a missing scope is not an error (``get`` prints null, ``list`` prints ``{}``): the
answer stays on stdout and the exit status stays 0. When the store has scopes close to
the one asked for (:func:`difflib.get_close_matches`), one line on stderr names them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable

from evstate.cli.common import warn

__all__ = ["scope_suggestions", "warn_if_unknown_scope"]


def scope_suggestions(scope: str, scopes: Iterable[str]) -> list[str]:
    """Up to three existing scopes that look like ``scope`` (none when it exists)."""
    known = list(scopes)
    if scope in known:
        return []
    return difflib.get_close_matches(scope, known, n=3, cutoff=0.6)


def warn_if_unknown_scope(scope: str, list_groups: Callable[[], dict[str, list[str]]]) -> None:
    """Print ``no scope 'x'; did you mean 'y'?`` when ``scope`` is missing and similar exist.

    ``list_groups`` is the store's (or the server's): called only here, after an empty
    answer, so a read that found something costs nothing more.
    """
    similar = scope_suggestions(scope, list_groups()["groups"])
    if similar:
        names = " or ".join(repr(name) for name in similar)
        warn(f"no scope {scope!r}; did you mean {names}?")
