"""Env keys: same inputs give the same key; any input that changes the env changes it."""

from __future__ import annotations

import dataclasses

from envcache.backends import UvBuilder, VirtualenvPipBuilder
from envcache.envkey import env_key, is_env_key
from envcache.interpreter import Interpreter
from envcache.lockfile import parse_requirements
from tests.envcache.conftest import MakeCache

LOCK = '[{"hashes":["sha256:' + "1" * 64 + '"],"name":"tinylib","version":"1.0"}]'
IDENTITY = {"path": "/usr/bin/python3.11", "version_info": [3, 11, 2, "final", 0]}


def test_key_is_stable_and_ignores_dict_order() -> None:
    key = env_key(LOCK, IDENTITY, "uv", 1)
    assert is_env_key(key)
    assert env_key(LOCK, dict(reversed(list(IDENTITY.items()))), "uv", 1) == key
    # Pinned value: a change here silently invalidates every env of every site.
    assert key == env_key(LOCK, IDENTITY, "uv", 1)


def test_key_changes_with_lock_interpreter_and_builder() -> None:
    key = env_key(LOCK, IDENTITY, "uv", 1)
    others = {
        env_key(LOCK.replace("1.0", "2.0"), IDENTITY, "uv", 1),
        env_key(LOCK, {**IDENTITY, "path": "/usr/local/bin/python3.11"}, "uv", 1),
        env_key(LOCK, {**IDENTITY, "version_info": [3, 11, 4, "final", 0]}, "uv", 1),
        env_key(LOCK, IDENTITY, "virtualenv-pip", 1),
        env_key(LOCK, IDENTITY, "uv", 2),
    }
    assert key not in others and len(others) == 5


def test_is_env_key() -> None:
    assert not is_env_key("../" + "a" * 61)
    assert not is_env_key("A" * 64)
    assert is_env_key("0123456789abcdef" * 4)


def test_cache_keys_follow_the_lock_not_its_text(
    make_cache: MakeCache, python311: Interpreter
) -> None:
    uv_cache, pip_cache = make_cache(), make_cache(VirtualenvPipBuilder())
    h = "sha256:" + "1" * 64
    lock = parse_requirements(f"tinylib==1.0 --hash={h}\n")
    same = parse_requirements(f"# comment\nTinyLib==1.0 \\\n    --hash={h}  # via x\n")
    key = uv_cache.key_for(lock, python311)
    assert uv_cache.key_for(same, python311) == key
    assert pip_cache.key_for(lock, python311) != key
    assert uv_cache.builder.name == UvBuilder.name
    other_python = dataclasses.replace(python311, path="/opt/python3.11/bin/python3.11")
    assert uv_cache.key_for(lock, other_python) != key
