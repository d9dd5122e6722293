"""The public surface is small, sorted and complete."""

from __future__ import annotations

import inspect

import evstate
import evstate.errors


def test_all_is_sorted_and_complete() -> None:
    names = [n for n in evstate.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in evstate.__all__:
        assert hasattr(evstate, name), name


def test_every_error_class_is_exported_and_rooted() -> None:
    for name, obj in inspect.getmembers(evstate.errors, inspect.isclass):
        if issubclass(obj, Exception) and obj.__module__ == "evstate.errors":
            assert name in evstate.__all__, name
            assert issubclass(obj, evstate.Error)


def test_cbor2_uses_its_compiled_extension() -> None:
    import cbor2

    assert type(cbor2.loads).__name__ == "builtin_function_or_method"
    assert cbor2.loads.__module__ == "cbor2._cbor2"
