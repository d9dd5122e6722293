"""The observer filter language of iii-sdk 0.25 (``source.filters`` of an ``observe``).

A filter is a JSON object tested against one document per observed invocation:
``{"input", "output" | "error", "caller"?, "metadata"?}``. Its keys are paths (``input.a.0``)
mapping to operator objects (``{"$gte": 500}``), or the combinators ``$and`` (a non-empty
array of filters, all must match), ``$or`` (a non-empty array, one must match) and ``$not``
(one filter, must not match). ``{}`` matches everything.

Value operators: ``$eq``/``$ne`` (JSON equality: numbers as doubles, no coercion between
types, objects by members), ``$in``/``$nin`` (an array of literals), ``$gt``/``$gte``/``$lt``/
``$lte`` (a number or a string operand; only a value of the same kind compares),
``$exists`` (a boolean), ``$prefix`` (a string) and ``$any`` (an array element matches an
operator object, or a filter whose paths start at ``@``, the element). A path that resolves
to nothing is *absent*: only ``$ne``, ``$nin`` and ``$exists: false`` accept it; ``null``
is a value.

:func:`compile_filter` validates with the SDK's limits (the ``MAX_*`` constants) and refuses
anything else with :class:`FilterError`, whose code is ``INVALID_FILTER``, the code the SDK expects.
A compiled :class:`Filter` never raises while matching. Paths and how values compare:
evstate.server.observe_paths.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final

from evstate.server.observe_paths import (
    ABSENT,
    PathError,
    compile_path,
    json_equal,
    number,
)
from evstate.server.protocol import encode

__all__ = [
    "ABSENT",
    "Filter",
    "FilterError",
    "INVALID_FILTER",
    "MATCH_ALL",
    "MAX_DEPTH",
    "MAX_ELEMENT_VISITS",
    "MAX_ENCODED_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_LITERAL",
    "MAX_LITERAL_DEPTH",
    "MAX_NODES",
    "MAX_SET_ITEMS",
    "Op",
    "Test",
    "VALUE_OPERATORS",
    "compile_filter",
]

INVALID_FILTER: Final = "INVALID_FILTER"

MAX_DEPTH: Final = 8
"""Filter nesting: the filter itself is level 1; ``$or``, ``$not`` and ``$any`` go one deeper."""
MAX_NODES: Final = 64
"""Each value operator, ``$or`` and ``$not`` is a node; paths and ``$and`` are free."""
MAX_SET_ITEMS: Final = 256
"""Items of one ``$in`` / ``$nin`` array."""
MAX_ENCODED_BYTES: Final = 8192
"""UTF-8 bytes of the filter's compact JSON."""
MAX_LITERAL: Final = 2**53
"""Every number in a filter is within this of zero, so all implementations read it alike."""
MAX_LITERAL_DEPTH: Final = 32
"""Arrays / objects nested in one ``$eq``/``$ne`` operand or ``$in``/``$nin`` item."""
MAX_JSON_DEPTH: Final = 120
"""Arrays / objects nested in the whole filter (the filter object is level 1)."""
MAX_ELEMENT_VISITS: Final = 200_000
"""Array elements one match may visit through ``$any`` (evstate's guard; not in the SDK)."""

VALUE_OPERATORS: Final = frozenset(
    {"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists", "$prefix", "$any"}
)
_NO_DOCUMENT: Final[Mapping[str, Any]] = {}  # what `$any` element filters see as the document

log = logging.getLogger("evstate.server.app")


class FilterError(ValueError):
    """A filter the language refuses; ``code`` is always ``INVALID_FILTER``."""

    code = INVALID_FILTER

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# A compiled test: ``test(document, element)``; ``element`` is the current ``$any`` item.
Test = Callable[[Mapping[str, Any], Any], bool]
# A compiled value operator: ``op(value)``, ``value`` being ABSENT when the path is absent.
Op = Callable[[Any], bool]


class _TooCostly(Exception):
    """A match visited more than MAX_ELEMENT_VISITS array elements."""


class _Visits:
    """What is left of one match's element visits (shared by the filter's ``$any``s)."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_ELEMENT_VISITS


class Filter:
    """A validated filter. :attr:`source` is the filter as received (JSON).

    :meth:`matches` is for one thread at a time (the server's event loop).
    """

    __slots__ = ("_test", "_visits", "match_all", "source")

    gave_up: ClassVar[int] = 0
    """Matches that hit MAX_ELEMENT_VISITS, in this process."""

    def __init__(
        self, source: dict[str, Any], test: Test, match_all: bool, visits: _Visits
    ) -> None:
        self.source = source
        self._test = test
        self.match_all = match_all
        self._visits = visits

    def matches(self, document: Mapping[str, Any]) -> bool:
        """True if the document passes; a missing root key is an absent root. Never raises.

        A match that would visit more than MAX_ELEMENT_VISITS array elements (``$any``)
        is a non-match: nested ``$any`` clauses over the same arrays multiply, and the
        server must not stall on one document.
        """
        if self.match_all:
            return True
        self._visits.left = MAX_ELEMENT_VISITS
        try:
            return self._test(document, ABSENT)
        except _TooCostly:
            Filter.gave_up += 1
            if Filter.gave_up == 1 or Filter.gave_up % 1000 == 0:  # no log flood
                log.warning(
                    "evstate serve: a filter match gave up after %d array elements (%d times)",
                    MAX_ELEMENT_VISITS,
                    Filter.gave_up,
                )
            return False
        except Exception:  # a value the evaluator did not foresee: a non-match, never a crash
            return False


def compile_filter(source: Any) -> Filter:
    """Validate ``source`` (a decoded JSON value) and compile it.

    Raises:
        FilterError: ``INVALID_FILTER``, naming the first rule broken.
    """
    if not isinstance(source, dict):
        raise FilterError(f"a filter is a JSON object, not {_kind(source)}")
    _check_json(source)
    try:
        size = len(encode(source).encode("utf-8"))
    except (ValueError, TypeError) as exc:
        raise FilterError(f"the filter is not JSON: {exc}") from None
    if size > MAX_ENCODED_BYTES:
        raise FilterError(f"the filter is {size} bytes of JSON; the limit is {MAX_ENCODED_BYTES}")
    compiler = _Compiler()
    clauses = compiler.filter(source, 1, in_any=False)
    return Filter(source, _all_of(clauses), not clauses, compiler.visits)


# ---- validation of the JSON as a whole --------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _check_json(source: dict[str, Any]) -> None:
    """Numbers within ±2^53 and at most MAX_JSON_DEPTH nested containers, anywhere."""
    pending: list[tuple[Any, int]] = [(source, 1)]
    while pending:
        value, level = pending.pop()
        if isinstance(value, dict | list):
            if level > MAX_JSON_DEPTH:
                raise FilterError(f"the filter nests more than {MAX_JSON_DEPTH} arrays and objects")
            members = value.values() if isinstance(value, dict) else value
            pending.extend((member, level + 1) for member in members)
        elif (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and not abs(value) <= MAX_LITERAL  # also refuses NaN
        ):
            raise FilterError(f"the number {value} is beyond ±2^53")


def _check_literal(where: str, literal: Any) -> None:
    pending: list[tuple[Any, int]] = [(literal, 0)]
    while pending:
        value, level = pending.pop()
        if isinstance(value, dict | list):
            if level >= MAX_LITERAL_DEPTH:
                raise FilterError(
                    f"{where}: a literal nests more than {MAX_LITERAL_DEPTH} arrays and objects"
                )
            members = value.values() if isinstance(value, dict) else value
            pending.extend((member, level + 1) for member in members)


def _all_of(tests: list[Test]) -> Test:
    if not tests:
        return lambda _document, _element: True
    if len(tests) == 1:
        return tests[0]
    frozen = tuple(tests)
    return lambda document, element: all(test(document, element) for test in frozen)


def _any_of(tests: list[Test]) -> Test:
    frozen = tuple(tests)
    return lambda document, element: any(test(document, element) for test in frozen)


def _negation(test: Test) -> Test:
    return lambda document, element: not test(document, element)


# ---- the compiler ---------------------------------------------------------------------------


class _Compiler:
    """One pass of validation and compilation, counting nodes."""

    def __init__(self) -> None:
        self.nodes = 0
        self.visits = _Visits()

    def _node(self) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise FilterError(f"the filter has more than {MAX_NODES} operators")

    def filter(self, source: Any, depth: int, *, in_any: bool) -> list[Test]:
        """The clauses of one filter object (its ``$and`` members flattened into it)."""
        if depth > MAX_DEPTH:
            raise FilterError(f"the filter nests deeper than {MAX_DEPTH} levels")
        clauses: list[Test] = []
        objects = [source]
        while objects:
            current = objects.pop()
            if not isinstance(current, dict):
                raise FilterError(f"a filter is a JSON object, not {_kind(current)}")
            for key, value in current.items():
                if key == "$and":
                    objects.extend(reversed(self._members("$and", value)))
                elif key == "$or":
                    self._node()
                    options = [
                        _all_of(self.filter(member, depth + 1, in_any=in_any))
                        for member in self._members("$or", value)
                    ]
                    clauses.append(_any_of(options))
                elif key == "$not":
                    self._node()
                    if not isinstance(value, dict):
                        raise FilterError(f"`$not` takes a filter object, not {_kind(value)}")
                    clauses.append(_negation(_all_of(self.filter(value, depth + 1, in_any=in_any))))
                elif key.startswith("$"):
                    raise FilterError(
                        f'`{key}` applies to a path: write {{"<path>": {{"{key}": ...}}}}'
                        if key in VALUE_OPERATORS
                        else f"`{key}` is not an operator of the filter language"
                    )
                else:
                    try:
                        resolve = compile_path(key, in_any)
                    except PathError as exc:
                        raise FilterError(str(exc)) from None
                    ops = self.operators(key, value, depth)
                    clauses.append(_path_test(resolve, ops))
        return clauses

    @staticmethod
    def _members(name: str, value: Any) -> list[Any]:
        if not isinstance(value, list) or not value:
            raise FilterError(f"`{name}` takes a non-empty array of filters, not {_kind(value)}")
        return value

    def operators(self, path: str, value: Any, depth: int) -> list[Op]:
        """The operator object of ``path`` (``depth``: the level of the filter holding it)."""
        if not isinstance(value, dict) or not value or not all(k.startswith("$") for k in value):
            raise FilterError(
                f'`{path}` takes a non-empty operator object such as {{"$eq": ...}}'
                " (bare values are not allowed)"
            )
        ops: list[Op] = []
        for name, operand in value.items():
            self._node()
            ops.append(self._operator(path, name, operand, depth))
        return ops

    def _operator(self, path: str, name: str, operand: Any, depth: int) -> Op:
        where = f"`{path}` `{name}`"
        if name in ("$eq", "$ne"):
            _check_literal(where, operand)
            if name == "$eq":
                return lambda v: v is not ABSENT and json_equal(v, operand)
            return lambda v: v is ABSENT or not json_equal(v, operand)
        if name in ("$in", "$nin"):
            if not isinstance(operand, list):
                raise FilterError(f"{where} takes an array, not {_kind(operand)}")
            if len(operand) > MAX_SET_ITEMS:
                raise FilterError(f"{where} has {len(operand)} items (limit {MAX_SET_ITEMS})")
            for item in operand:
                _check_literal(where, item)
            items = tuple(operand)
            if name == "$in":
                return lambda v: v is not ABSENT and any(json_equal(v, i) for i in items)
            return lambda v: v is ABSENT or not any(json_equal(v, i) for i in items)
        if name in ("$gt", "$gte", "$lt", "$lte"):
            return _order(where, name, operand)
        if name == "$exists":
            if not isinstance(operand, bool):
                raise FilterError(f"{where} takes a boolean, not {_kind(operand)}")
            return lambda v: (v is not ABSENT) is operand
        if name == "$prefix":
            if not isinstance(operand, str):
                raise FilterError(f"{where} takes a string, not {_kind(operand)}")
            return lambda v: isinstance(v, str) and v.startswith(operand)
        if name == "$any":
            return self._any(where, path, operand, depth)
        if name in ("$and", "$or", "$not"):
            raise FilterError(f"{where}: `{name}` combines filters; it is not a value operator")
        raise FilterError(f"{where} is not an operator of the filter language")

    def _any(self, where: str, path: str, operand: Any, depth: int) -> Op:
        if not isinstance(operand, dict):
            raise FilterError(
                f"{where} takes an operator object or a filter over `@`, not {_kind(operand)}"
            )
        if depth + 1 > MAX_DEPTH:
            raise FilterError(f"the filter nests deeper than {MAX_DEPTH} levels")
        if operand and all(key in VALUE_OPERATORS for key in operand):
            element_ops = tuple(self.operators(path, operand, depth + 1))

            def element_test(item: Any) -> bool:
                return all(op(item) for op in element_ops)

        else:
            # A filter over the element: it reads `@` paths only, never the document.
            inner = _all_of(self.filter(operand, depth + 1, in_any=True))

            def element_test(item: Any) -> bool:
                return inner(_NO_DOCUMENT, item)

        visits = self.visits

        def any_element(value: Any) -> bool:
            if not isinstance(value, list):
                return False
            for item in value:
                visits.left -= 1
                if visits.left < 0:
                    raise _TooCostly
                if element_test(item):
                    return True
            return False

        return any_element


def _path_test(resolve: Callable[[Mapping[str, Any], Any], Any], ops: list[Op]) -> Test:
    if len(ops) == 1:
        op = ops[0]
        return lambda document, element: op(resolve(document, element))
    frozen = tuple(ops)

    def test(document: Mapping[str, Any], element: Any) -> bool:
        value = resolve(document, element)
        return all(op(value) for op in frozen)

    return test


def _order(where: str, name: str, operand: Any) -> Op:
    accept: Callable[[int], bool] = {
        "$gt": lambda c: c > 0,
        "$gte": lambda c: c >= 0,
        "$lt": lambda c: c < 0,
        "$lte": lambda c: c <= 0,
    }[name]
    bound = number(operand)
    if bound is not None:
        limit = bound

        def numbers(value: Any) -> bool:
            found = number(value)
            return found is not None and accept((found > limit) - (found < limit))

        return numbers
    if isinstance(operand, str):
        # Python orders str by code point, which is the UTF-8 byte order the engine uses.
        return lambda v: isinstance(v, str) and accept((v > operand) - (v < operand))
    raise FilterError(f"{where} takes a number or a string, not {_kind(operand)}")


MATCH_ALL: Final = compile_filter({})
"""The filter ``{}``: every document matches."""
