"""DAG versions and their envs: the node's env cache, lock validation at push, env keys.

The env cache itself (:mod:`envcache`) knows nothing about DAGs; this module maps a DAG
version's lockfile to the env it runs in, on this node's interpreter and builder.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from envcache.backends import Builder, UvBuilder, VirtualenvPipBuilder
from envcache.cache import Env, EnvCache
from envcache.errors import CorruptEnvError, LockfileError
from envcache.interpreter import Interpreter
from envcache.lock import Lock
from envcache.lockfile import parse_pylock, parse_requirements
from isolate.config import Config
from isolate.errors import IsolateError, ValidationError
from isolate.model import DagSpec

_PYLOCK = re.compile(r"(.*/)?pylock(\.[^./]+)?\.toml")


def make_builder(name: str) -> Builder:
    return VirtualenvPipBuilder() if name == "virtualenv-pip" else UvBuilder()


def env_cache(config: Config) -> EnvCache:
    """The node's env cache under ``<home>/envcache``, configured from the settings."""
    settings = config.settings
    return EnvCache(
        config.envcache_dir,
        builder=make_builder(settings.env_builder),
        find_links=settings.find_links,
        offline=settings.offline,
        allow_direct_references=settings.allow_direct_references,
    )


@functools.cache
def _probe(path: str) -> Interpreter:
    return Interpreter.probe(path)


def node_interpreter(config: Config) -> Interpreter:
    """The interpreter envs are built on (probed once per process)."""
    return _probe(config.settings.env_python)


def parse_lock(lockfile: str, text: str, *, allow_direct_references: bool) -> Lock:
    """A lock from its file name and text: PEP 751 ``pylock.toml`` or requirements with hashes."""
    name = Path(lockfile).name
    if _PYLOCK.fullmatch(lockfile):
        return parse_pylock(text, source=name, allow_direct_references=allow_direct_references)
    return parse_requirements(text, source=name, allow_direct_references=allow_direct_references)


def spec_lock(spec: DagSpec, config: Config) -> Lock:
    """The version's validated lock; problems become the DAG's validation error."""
    env = spec.environment
    try:
        lock = parse_lock(
            env.lockfile, env.lock, allow_direct_references=config.settings.allow_direct_references
        )
        # Markers are evaluated for the interpreter the env will use: two entries of one
        # package that both apply there are an error now, not at build time.
        lock.applicable(node_interpreter(config).marker_env)
    except LockfileError as exc:
        raise ValidationError(exc.problems, subject=f"dag {spec.dag_id}: lockfile") from None
    return lock


class EnvBusyError(IsolateError):
    """An env that must be replaced is held by a running task."""

    exit_code = 7  # an environment problem, as envcache's errors are


@dataclass(frozen=True)
class EnvFor:
    """The env of one DAG version: its key, and whether ``ensure`` had to build it."""

    key: str
    env: Env
    built: bool


class EnvResolver:
    """Env keys and envs for DAG versions, memoized by lock hash within one command."""

    def __init__(self, config: Config, cache: EnvCache | None = None) -> None:
        self.config = config
        self.cache = cache or env_cache(config)
        # By lock hash: each lock is parsed and its key computed once per process (a
        # scheduler launches many tries of one version), not at every launch.
        self._keys: dict[str, str] = {}
        self._locks: dict[str, Lock] = {}

    def lock(self, spec: DagSpec) -> Lock:
        """The version's parsed, validated lock (see :func:`spec_lock`), parsed once."""
        lock_hash = spec.environment.lock_hash
        if lock_hash not in self._locks:
            self._locks[lock_hash] = spec_lock(spec, self.config)
        return self._locks[lock_hash]

    def key(self, spec: DagSpec) -> str:
        lock_hash = spec.environment.lock_hash
        if lock_hash not in self._keys:
            interpreter = node_interpreter(self.config)
            self._keys[lock_hash] = self.cache.key_for(self.lock(spec), interpreter)
        return self._keys[lock_hash]

    def keys(self, specs: Iterable[DagSpec]) -> dict[str, str]:
        """Env key per lock hash of ``specs``."""
        return {spec.environment.lock_hash: self.key(spec) for spec in specs}

    def ensure(self, spec: DagSpec, *, repair: bool = False) -> EnvFor:
        """The version's env, built if missing.

        An existing env gets the quick check (sizes, modes, no extra files); with ``repair``
        it gets the deep one (every file's digest) too, and a modified env is removed and
        built again instead of raising :class:`CorruptEnvError`.
        """
        lock = self.lock(spec)
        interpreter = node_interpreter(self.config)
        key = self.key(spec)
        try:
            existed = self.cache.get(key) is not None
        except CorruptEnvError:
            existed = True  # ensure() reports it (or repairs it)
        if repair and existed and self.cache.verify(key, deep=True):
            self._remove_damaged(key)
            existed = False
        try:
            env = self.cache.ensure(lock, interpreter)
        except CorruptEnvError:
            if not repair:
                raise
            self._remove_damaged(key)
            env = self.cache.ensure(lock, interpreter)
            existed = False
        return EnvFor(key=key, env=env, built=not existed)

    def _remove_damaged(self, key: str) -> None:
        if not self.cache.remove(key):
            raise EnvBusyError(
                f"env {key} was modified after its build but a task is using it: "
                "try again when the task has finished"
            )
