"""DAG versions and their envs: the node's env cache, lock validation at push, env keys.

The env cache itself (:mod:`envcache`) knows nothing about DAGs; this module maps a DAG
version's lockfile to the env it runs in, on this node's interpreter and builder.

A version's env key and parsed lock are derived once, at push, and stored with it
(``dag_version_envs``) under the *basis* they were derived on: a fingerprint of everything
besides the lock that they depend on (see :func:`env_basis`). A reader on another basis (the
admin changed ``env_python`` or ``env_builder``) derives and stores its own; versions pushed
before the store kept them get theirs the first time they are needed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envcache.backends import Builder, UvBuilder, VirtualenvPipBuilder
from envcache.cache import Env, EnvCache
from envcache.envkey import KEY_FORMAT
from envcache.errors import CorruptEnvError, LockfileError
from envcache.interpreter import Interpreter
from envcache.lock import Lock, LockEntry
from envcache.lockfile import parse_pylock, parse_requirements
from isolate.config import Config
from isolate.errors import IsolateError, ValidationError
from isolate.model import DagSpec
from isolate.store.records import VersionEnvRecord, VersionRecord

if TYPE_CHECKING:
    from isolate.store import Store

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
    lockfile = spec.lockfile
    try:
        lock = parse_lock(
            lockfile.path,
            lockfile.text,
            allow_direct_references=config.settings.allow_direct_references,
        )
        # Markers are evaluated for the interpreter the env will use: two entries of one
        # package that both apply there are an error now, not at build time.
        lock.applicable(node_interpreter(config).marker_env)
    except LockfileError as exc:
        raise ValidationError(exc.problems, subject=f"dag {spec.dag_id}: lockfile") from None
    return lock


# Bump when lock_document's output changes shape: every stored basis then differs, and each
# version's lock and key are derived again from its lockfile on first use.
LOCK_DOCUMENT_FORMAT = 1


def lock_document(lock: Lock) -> str:
    """``lock`` as a JSON document that :func:`lock_from_document` turns back into it, every
    field of every entry included (``origin`` too: messages name the lockfile's lines)."""
    entries = [
        {
            "name": entry.name,
            "version": entry.version,
            "hashes": sorted(entry.hashes),
            "marker": entry.marker,
            "url": entry.url,
            "origin": entry.origin,
        }
        for entry in lock.entries
    ]
    document = {"format": LOCK_DOCUMENT_FORMAT, "source": lock.source, "entries": entries}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def lock_from_document(text: str) -> Lock:
    """The lock :func:`lock_document` wrote; ``ValueError`` if ``text`` is not such a document."""
    try:
        document: dict[str, Any] = json.loads(text)
        if document["format"] != LOCK_DOCUMENT_FORMAT:
            raise ValueError(f"lock document format {document['format']!r}")
        entries = tuple(
            LockEntry(
                name=str(item["name"]),
                version=str(item["version"]),
                hashes=frozenset(str(digest) for digest in item["hashes"]),
                marker=None if item["marker"] is None else str(item["marker"]),
                url=None if item["url"] is None else str(item["url"]),
                origin=str(item["origin"]),
            )
            for item in document["entries"]
        )
        return Lock(entries, str(document["source"]))
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a lock document: {exc!r}") from exc


def env_basis(interpreter: Interpreter, builder: Builder, *, allow_direct_references: bool) -> str:
    """What a version's stored env key and parsed lock hold for, besides the lock: a sha256.

    The key depends on the interpreter's identity, its marker environment (through the
    lock's canonical form, :meth:`envcache.cache.EnvCache.key_for`), the builder's name and
    format version and the key's format; whether the lock parses at all on the
    ``allow_direct_references`` policy; the stored lock on its document's format. A reader
    whose basis differs from the stored one derives its own instead of trusting it.
    """
    payload = {
        "key_format": KEY_FORMAT,
        "lock_document": LOCK_DOCUMENT_FORMAT,
        "interpreter": interpreter.identity(),
        "marker_env": dict(interpreter.marker_env),
        "builder": {"name": builder.name, "format_version": builder.format_version},
        "allow_direct_references": allow_direct_references,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _spec_of(record: VersionRecord) -> DagSpec:
    # Imported here: the catalog loads the store's SQLAlchemy half, which the commands that
    # import this module only to build or check a lock never need.
    from isolate.services.catalog import spec_of

    return spec_of(record)


class EnvBusyError(IsolateError):
    """An env that must be replaced is held by a running task."""

    exit_code = 7  # an environment problem, as envcache's errors are


@dataclass(frozen=True)
class VersionEnv:
    """What a version's env is on this node: its key, and the lock it is built from."""

    key: str
    lock: Lock


@dataclass(frozen=True)
class EnsuredEnv:
    """What :meth:`EnvResolver.ensure` gives: a version's env (``.env``), its key, and
    whether it had to be built."""

    key: str
    env: Env
    built: bool


class EnvResolver:
    """Env keys and envs for DAG versions on this node's interpreter and builder.

    :meth:`derive` parses a spec's lock and computes its key (once per lockfile within one
    process); :meth:`for_version` and :meth:`version_keys` read what the store keeps for a
    stored version on this node's basis, and derive and store only what it lacks.
    """

    def __init__(self, config: Config, cache: EnvCache | None = None) -> None:
        self.config = config
        self.cache = cache or env_cache(config)
        # A scheduler launches many tries of one version: each version's env is looked up
        # once per process, and each lockfile parsed at most once.
        self._derived: dict[tuple[str, str], VersionEnv] = {}
        self._versions: dict[tuple[str, int], VersionEnv] = {}

    @functools.cached_property
    def basis(self) -> str:
        """This node's :func:`env_basis`."""
        return env_basis(
            node_interpreter(self.config),
            self.cache.builder,
            allow_direct_references=self.config.settings.allow_direct_references,
        )

    def derive(self, spec: DagSpec) -> VersionEnv:
        """The spec's validated lock (see :func:`spec_lock`) and its env key, computed here."""
        # The file name too: it says how the text is parsed (pylock.toml or requirements).
        at = (spec.lockfile.path, spec.lockfile.lock_hash)
        if at not in self._derived:
            lock = spec_lock(spec, self.config)
            key = self.cache.key_for(lock, node_interpreter(self.config))
            self._derived[at] = VersionEnv(key=key, lock=lock)
        return self._derived[at]

    def record(self, env: VersionEnv) -> VersionEnvRecord:
        """``env`` as the store keeps it, on this node's basis."""
        return VersionEnvRecord(
            basis=self.basis, env_key=env.key, lock_json=lock_document(env.lock)
        )

    def lock(self, spec: DagSpec) -> Lock:
        """The version's parsed, validated lock (see :func:`spec_lock`), parsed once."""
        return self.derive(spec).lock

    def key(self, spec: DagSpec) -> str:
        return self.derive(spec).key

    def for_version(
        self, store: Store, dag_id: str, version: int, spec: DagSpec | None = None
    ) -> VersionEnv:
        """The stored version's env on this node: as stored for this basis, else derived from
        its lock (``spec``, or the stored one) and stored for the next reader.

        Given the version's ``spec``, what is found also serves :meth:`derive` (and so
        :meth:`key` and :meth:`ensure`) for that spec: they parse no lock after this.
        """
        at = (dag_id, version)
        if at not in self._versions:
            found = self._stored(store, dag_id, version)
            if found is None:
                if spec is None:
                    spec = _spec_of(store.get_version(dag_id, version))
                found = self.derive(spec)
                store.version_envs.save([(dag_id, version, self.record(found))])
            self._versions[at] = found
        if spec is not None:
            lockfile = spec.lockfile
            self._derived.setdefault((lockfile.path, lockfile.lock_hash), self._versions[at])
        return self._versions[at]

    def _stored(self, store: Store, dag_id: str, version: int) -> VersionEnv | None:
        record = store.version_envs.get(dag_id, version, self.basis)
        if record is None:
            return None
        try:
            return VersionEnv(key=record.env_key, lock=lock_from_document(record.lock_json))
        except ValueError:
            return None  # not a document this isolate wrote: derived again from the lockfile

    def version_keys(
        self, store: Store, records: Sequence[VersionRecord]
    ) -> dict[tuple[str, int], str]:
        """Env key by (dag_id, version) of ``records``: read in one query, and the versions
        without one on this basis derived from their specs and stored in one transaction."""
        stored = store.version_envs.keys(self.basis)
        keys: dict[tuple[str, int], str] = {}
        missing: list[tuple[str, int, VersionEnvRecord]] = []
        for record in records:
            at = (record.dag_id, record.version)
            if at in stored:
                keys[at] = stored[at]
                continue
            derived = self.derive(_spec_of(record))
            keys[at] = derived.key
            missing.append((record.dag_id, record.version, self.record(derived)))
        store.version_envs.save(missing)
        return keys

    def ensure(self, spec: DagSpec, *, repair: bool = False) -> EnsuredEnv:
        """The spec's env (its lock and key from :meth:`derive`), built if missing.

        An existing env gets the quick check (sizes, modes, no extra files); with ``repair``
        it gets the deep one (every file's digest) too, and a modified env is removed and
        built again instead of raising :class:`CorruptEnvError`.
        """
        derived = self.derive(spec)
        lock, key = derived.lock, derived.key
        interpreter = node_interpreter(self.config)
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
        return EnsuredEnv(key=key, env=env, built=not existed)

    def _remove_damaged(self, key: str) -> None:
        if not self.cache.remove(key):
            raise EnvBusyError(
                f"env {key} was modified after its build but a task is using it: "
                "try again when the task has finished"
            )
