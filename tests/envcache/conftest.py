"""Fixtures for envcache: a wheelhouse of small real wheels, the target interpreter, caches."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from envcache.backends import Builder
from envcache.cache import EnvCache
from envcache.interpreter import Interpreter
from tests.envcache.wheels import make_wheel, sha256_of

# World-executable on the test machine; envs must be usable by unprivileged users.
PYTHON = "/usr/bin/python3.11"
BIG = tuple(f"pkg{i:02d}" for i in range(10))


@dataclass
class Wheelhouse:
    """A directory of wheels and their sha256 hashes, to write real lockfiles from."""

    path: Path
    hashes: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, version: str, **kwargs: object) -> None:
        wheel = make_wheel(self.path, name, version, **kwargs)  # type: ignore[arg-type]
        self.hashes[f"{name}=={version}"] = sha256_of(wheel)

    def lock(self, *pins: str) -> str:
        """requirements.txt text for pins like ``tinylib==1.0``, with their real hashes."""
        return "".join(f"{pin} \\\n    --hash={self.hashes[pin]}\n" for pin in pins)


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Wheelhouse:
    house = Wheelhouse(tmp_path_factory.mktemp("wheelhouse"))
    house.add("tinylib", "1.0")
    house.add("tinylib", "2.0")
    house.add("otherlib", "1.0")
    for name in BIG:
        body = "".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(50))
        house.add(name, "1.0", files={f"{name}/__init__.py": body, f"{name}/data.py": body})
    return house


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
