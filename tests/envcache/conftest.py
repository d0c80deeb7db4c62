"""Fixtures for envcache: a wheelhouse of small real wheels, the target interpreter, caches."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from envcache.backends import Builder
from envcache.cache import EnvCache
from envcache.interpreter import Interpreter
from tests.conftest import PYTHON, Wheelhouse


@pytest.fixture(scope="session")
def python311() -> Interpreter:
    if not os.access(PYTHON, os.X_OK):
        pytest.skip(f"{PYTHON} is not installed on this machine")
    return Interpreter.probe(PYTHON)


MakeCache = Callable[..., EnvCache]


@pytest.fixture
def make_cache(tmp_path: Path, wheelhouse: Wheelhouse) -> MakeCache:
    """EnvCache(tmp_path / "cache") from the wheelhouse, offline; keyword arguments override."""

    def make(builder: Builder | None = None, **kwargs: object) -> EnvCache:
        options: dict[str, object] = {"find_links": [wheelhouse.path], "offline": True}
        options.update(kwargs)
        root = options.pop("root", tmp_path / "cache")
        return EnvCache(root, builder=builder, **options)  # type: ignore[arg-type]

    return make
