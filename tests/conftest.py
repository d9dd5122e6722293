from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

import evstate


@pytest.fixture(params=["memory", "file"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(
    tmp_path: os.PathLike[str], store_kind: str
) -> Iterator[Callable[..., evstate.Store]]:
    """Open stores of the parametrized kind; all are closed at the end of the test."""
    opened: list[evstate.Store] = []

    def factory(**options: object) -> evstate.Store:
        if store_kind == "memory":
            store = evstate.open(**options)
        else:
            store = evstate.open(os.path.join(tmp_path, "store"), **options)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., evstate.Store]) -> evstate.Store:
    return make_store()
