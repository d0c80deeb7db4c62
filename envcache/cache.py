"""The env cache: one verified, read-only virtualenv per env key, built at most once.

Layout under the root (created by the first build)::

    envs/<key>/        complete envs only, read-only (root, envs: 0755; env dirs 0555)
    envs/.<key>.<rand> a finished build being made read-only, then renamed (0700)
    tmp/<key>.<rand>/  builds in progress, on the same filesystem so the rename is atomic (0700)
    locks/<key>.build  serializes builds of one key; locks/<key>.use: tasks vs removal (0700)
    locks/gc.lock      builds hold it shared while they link shared trees, gc exclusively (0700)
    uv-cache/          uv's cache, envs hardlink from it (0700; pip-cache/ for virtualenv+pip)
    objects/           shared by content between envs (0711: only trees/ is reachable)
      files/<sha256>-<mode> identical files of envs and trees, hardlinked (0700, objects.py)
      trees/           package trees envs link to, readable by everyone (0755, see trees.py)
    trash/             envs and trees being removed (0700)
    pins/<key>         an admin's pin: gc keeps the env whatever the policy (0700)

Tasks run as unprivileged users need read and execute access to ``envs/``, the envs in it and
the trees they link to, never write access; the use lock is taken by the (root) supervisor on
a task's behalf, so ``locks/`` is private.
"""

from __future__ import annotations

import builtins
import os
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock

from envcache import manifest as manifests
from envcache import tree, trees
from envcache.backends import Builder, Sources, UvBuilder
from envcache.envkey import env_key, is_env_key
from envcache.errors import CorruptEnvError, EnvCacheError, LockfileError
from envcache.finish import Finisher
from envcache.interpreter import Interpreter
from envcache.lock import Lock
from envcache.lockfile import load_lock
from envcache.manifest import MANIFEST_NAME, Manifest
from envcache.objects import ObjectStore
from envcache.trees import TreeStore
from envcache.uselock import UseLock

_PUBLIC_DIR = 0o755
_PRIVATE_DIR = 0o700
_TRAVERSABLE_DIR = 0o711  # others may reach a known name inside, not list it


@dataclass(frozen=True)
class Env:
    """A complete env in the cache."""

    key: str
    path: Path
    manifest: Manifest = field(repr=False)

    @property
    def python(self) -> Path:
        """The env's interpreter, what a task runs."""
        return self.path / "bin" / "python"

    @property
    def cache_tag(self) -> str | None:
        """The env interpreter's bytecode cache tag (``cpython-311``), from the manifest."""
        tag = self.manifest.interpreter.get("cache_tag")
        return tag if isinstance(tag, str) else None

    @property
    def warnings(self) -> list[str]:
        """Problems worth reporting that don't make the env unusable (e.g. no hardlinks)."""
        return self.manifest.warnings()


class EnvCache:
    """Turns locks into envs under ``root``, sharing one env per (lock, interpreter, builder).

    ``find_links`` and ``offline`` say where packages come from (a local wheelhouse, no
    network); ``allow_direct_references`` is the admin policy for URL and path requirements;
    ``allow_source_builds`` lets builds run sdists' build code as the cache owner (off);
    ``dedupe`` shares identical package trees and files between envs through ``objects/``
    (False: every env is a tree of its own, compiled in full).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        builder: Builder | None = None,
        find_links: Iterable[str | os.PathLike[str]] = (),
        offline: bool = False,
        allow_direct_references: bool = False,
        allow_source_builds: bool = False,
        dedupe: bool = True,
        shared: bool | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        # Whether other users run its envs (a node's cache, kept by root, whose tasks run as
        # tenants' users): then an env's interpreter must be one they can run. A plain
        # user's own cache serves that user alone, on any interpreter the user can run.
        self.shared = os.geteuid() == 0 if shared is None else shared
        self.builder = builder if builder is not None else UvBuilder()
        self.sources = Sources(
            tuple(Path(link).absolute() for link in find_links), offline, allow_source_builds
        )
        self.allow_direct_references = allow_direct_references
        self.dedupe = dedupe

    @property
    def envs_dir(self) -> Path:
        """Where complete envs live, one directory per key."""
        return self.root / "envs"

    @property
    def tmp_dir(self) -> Path:
        """Where builds in progress live."""
        return self.root / "tmp"

    @property
    def locks_dir(self) -> Path:
        """Build and use lock files."""
        return self.root / "locks"

    @property
    def trash_dir(self) -> Path:
        """Envs being removed."""
        return self.root / "trash"

    @property
    def pins_dir(self) -> Path:
        """One file per pinned env; its text says why."""
        return self.root / "pins"

    @property
    def objects(self) -> ObjectStore:
        """Files shared between envs by content (see objects.py)."""
        return ObjectStore(self.root / "objects")

    @property
    def trees(self) -> TreeStore:
        """Package trees shared between envs (see trees.py)."""
        objects = self.objects
        return TreeStore(objects.root / "trees", self.locks_dir, self.trash_dir, objects)

    def gc_lock(self) -> UseLock:
        """Builds hold it shared while they link shared trees; pruning takes it exclusively."""
        return UseLock(self.locks_dir / "gc.lock")

    @property
    def tool_cache_dir(self) -> Path:
        """The builder's own cache (uv's cache for the uv builder)."""
        return self.root / self.builder.cache_dir_name

    def load_lock(self, path: str | os.PathLike[str]) -> Lock:
        """Read and validate a lockfile under this cache's direct-reference policy."""
        return load_lock(Path(path), allow_direct_references=self.allow_direct_references)

    def key_for(self, lock: Lock, interpreter: Interpreter) -> str:
        """The key of the env ``lock`` needs on ``interpreter`` with this cache's builder."""
        return env_key(
            lock.canonical(interpreter.marker_env),
            interpreter.identity(),
            self.builder.name,
            self.builder.format_version,
        )

    def ensure(self, lock: Lock, interpreter: Interpreter) -> Env:
        """Return the env for ``lock`` on ``interpreter``, building it if it doesn't exist.

        Concurrent calls for one key, in any processes, build it once: the others wait for
        that build and return its env. Raises CorruptEnvError if the existing env differs
        from its manifest, BuildError if the build fails (nothing is left behind).
        """
        if lock.direct_references and not self.allow_direct_references:
            entry = lock.direct_references[0]
            raise LockfileError(
                [f"{entry.origin}: direct reference {entry.url!r} is not allowed by this cache"]
            )
        key = self.key_for(lock, interpreter)
        env = self._existing(key)
        if env is not None:
            return env
        if self.shared:
            interpreter.check_accessible()
        self._make_layout()
        with FileLock(self.locks_dir / f"{key}.build", mode=0o600):
            env = self._existing(key)  # built by whoever held the lock before us
            if env is not None:
                return env
            # Left by a killed build of this key (we hold its lock): its temporary directory,
            # or its env not yet renamed to its key (see _publish).
            for stale in [*self.tmp_dir.glob(f"{key}.*"), *self.envs_dir.glob(f".{key}.*")]:
                tree.remove_tree(stale)
            return self._build(key, lock, interpreter)

    def has(self, key: str) -> bool:
        """Whether an env with ``key`` is in place (not checked: :meth:`get` loads it)."""
        return self._env_path(key).is_dir()

    def get(self, key: str) -> Env | None:
        """The env with ``key``, or None; raises CorruptEnvError if its manifest is unreadable."""
        path = self._env_path(key)
        if not path.is_dir():
            return None
        return Env(key, path, Manifest.load(path))

    def keys(self) -> list[str]:
        """Keys of every env directory, sorted, whether or not its manifest is readable."""
        try:
            names = os.listdir(self.envs_dir)
        except FileNotFoundError:
            return []
        return sorted(name for name in names if is_env_key(name))

    def list(self) -> list[Env]:
        """Every env whose manifest is readable (see :meth:`keys` for all of them)."""
        envs = []
        for key in self.keys():
            try:
                env = self.get(key)
            except CorruptEnvError:
                continue
            if env is not None:
                envs.append(env)
        return envs

    # "builtins.list": inside the class, "list" is the method above.
    def verify(self, key: str, *, deep: bool = False) -> builtins.list[str]:
        """Differences between env ``key`` and its manifest (empty: intact); see manifest.verify."""
        path = self._env_path(key)
        if not path.is_dir():
            raise EnvCacheError(
                f"no env {key} in {self.envs_dir}; list envs with `isolate env list`"
            )
        try:
            recorded = Manifest.load(path)
        except CorruptEnvError as exc:
            return [str(exc)]
        differences = self._differences(path, recorded, deep=deep)
        if recorded.key != key:
            differences.insert(0, f"{MANIFEST_NAME}: belongs to env {recorded.key}")
        return differences

    def use_lock(self, key: str) -> UseLock:
        """The use lock of env ``key``: shared by running tasks, exclusive for removal."""
        return UseLock(self.locks_dir / f"{self._checked_key(key)}.use")

    @contextmanager
    def use(self, key: str) -> Iterator[Env]:
        """Hold env ``key``'s use lock shared while the body runs (a task), and yield the env.

        The use lock file's mtime records the last use, for gc's ``--older-than``.
        """
        if not self.locks_dir.is_dir():
            raise EnvCacheError(f"no env {key} in {self.envs_dir}; build it first")
        lock = self.use_lock(key)
        with lock.shared():
            os.utime(lock.path)
            env = self.get(key)
            if env is None:
                raise EnvCacheError(f"no env {key} in {self.envs_dir}; build it first")
            yield env

    def last_used(self, key: str) -> datetime | None:
        """When a task last started using env ``key`` (None: never)."""
        try:
            return datetime.fromtimestamp(self.use_lock(key).path.stat().st_mtime, UTC)
        except FileNotFoundError:
            return None

    def pin(self, key: str, reason: str) -> None:
        """Keep env ``key`` through every gc until :meth:`unpin`."""
        self._make_layout()
        (self.pins_dir / self._checked_key(key)).write_text(reason + "\n", encoding="utf-8")

    def unpin(self, key: str) -> bool:
        """Drop the pin of env ``key``; False if it had none."""
        try:
            (self.pins_dir / self._checked_key(key)).unlink()
        except FileNotFoundError:
            return False
        return True

    def pins(self) -> dict[str, str]:
        """Pinned env keys and the reasons given."""
        try:
            names = os.listdir(self.pins_dir)
        except FileNotFoundError:
            return {}
        return {
            name: (self.pins_dir / name).read_text(encoding="utf-8").strip()
            for name in sorted(names)
            if is_env_key(name)
        }

    def remove(self, key: str) -> bool:
        """Remove env ``key`` unless a task uses it; returns False (and keeps it) if in use.

        Crash-safe: the env is first renamed into ``trash/``, then deleted.
        """
        path = self._env_path(key)
        if not self.locks_dir.is_dir():
            return True
        for leftover in self.trash_dir.glob("*"):
            tree.remove_tree(leftover)  # from a removal interrupted after its rename
        with self.use_lock(key).try_exclusive() as taken:
            if not taken:
                return False
            if not path.is_dir():
                return True
            doomed = self.trash_dir / f"{key}.{secrets.token_hex(4)}"
            # As its owner, not root: made writable for the move, while no task may use it.
            tree.move_dir(path, doomed)
            tree.fsync_dir(self.envs_dir)
        tree.remove_tree(doomed)
        return True

    def _env_path(self, key: str) -> Path:
        return self.envs_dir / self._checked_key(key)

    @staticmethod
    def _checked_key(key: str) -> str:
        if not is_env_key(key):
            raise EnvCacheError(f"{key!r} is not an env key (64 hex digits)")
        return key

    def _existing(self, key: str) -> Env | None:
        """The env ``key`` if it exists and passes a quick verification."""
        try:
            env = self.get(key)
            if env is None:
                return None
            differences = self._differences(env.path, env.manifest, deep=False)
        except (CorruptEnvError, FileNotFoundError):
            if self._env_path(key).exists():
                raise
            return None  # removed while we looked: build it again
        if env.manifest.key != key:
            differences.insert(0, f"{MANIFEST_NAME}: belongs to env {env.manifest.key}")
        if differences:
            raise CorruptEnvError(
                f"env {key} was modified after its build ({len(differences)} difference(s), "
                f"first: {differences[0]}); remove it and build it again",
                differences,
            )
        return env

    def _differences(self, path: Path, manifest: Manifest, *, deep: bool) -> builtins.list[str]:
        """The env's own paths, its links to shared trees, then each tree's content."""
        links = trees.links(manifest.trees)
        found = manifests.verify(path, deep=deep, manifest=manifest, links=links)
        for link, digest in sorted(manifest.trees.items()):
            found += self.trees.verify(digest, deep=deep, shown_as=link)
        return found

    def _make_layout(self) -> None:
        layout = {
            self.root: _PUBLIC_DIR,
            self.envs_dir: _PUBLIC_DIR,
            self.tmp_dir: _PRIVATE_DIR,
            self.locks_dir: _PRIVATE_DIR,
            self.trash_dir: _PRIVATE_DIR,
            self.pins_dir: _PRIVATE_DIR,
            self.objects.root: _TRAVERSABLE_DIR,
            self.objects.files_dir: _PRIVATE_DIR,
            self.trees.root: _PUBLIC_DIR,
            self.tool_cache_dir: _PRIVATE_DIR,
        }
        try:
            for path, mode in layout.items():
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, mode)  # whatever the umask, and repairs a loosened mode
        except OSError as exc:
            raise EnvCacheError(
                f"cannot prepare the env cache at {self.root}: {exc.strerror}; "
                "run as the cache's owner"
            ) from exc

    def _build(self, key: str, lock: Lock, interpreter: Interpreter) -> Env:
        started = time.monotonic()
        dest = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self.tmp_dir))
        requirements = dest.with_name(dest.name + ".txt")
        try:
            requirements.write_text(lock.to_requirements(interpreter.marker_env), encoding="utf-8")
            tools = self.builder.build(
                dest,
                interpreter.path,
                requirements,
                sources=self.sources,
                cache_dir=self.tool_cache_dir,
            )
            # Before trees move out: what the hardlink check is about is the install.
            links = manifests.link_stats(dest, self.builder.link_mode)
            finisher = Finisher(
                builder=self.builder,
                trees=self.trees if self.dedupe else None,
                objects=self.objects if self.dedupe else None,
            )
            with self.gc_lock().shared():
                recorded = finisher.finish(dest, key, lock, interpreter, tools, links, started)
                final = self._env_path(key)
                self._publish(dest, final)
        except BaseException:
            tree.remove_tree(dest)
            raise
        finally:
            requirements.unlink(missing_ok=True)
        return Env(key, final, recorded)

    def _publish(self, dest: Path, final: Path) -> None:
        """Make the finished build ``dest`` read-only and rename it to ``final`` in one step.

        Moving a directory into another one needs write access to it (its ``..`` changes),
        which root has whatever the mode and an owner who is not root lacks once it is 0555.
        So the build first moves, still writable and private (0700: nobody else may even
        read it), to ``envs/.<key>.<rand>`` (not an env key: never taken for an env, and
        removed with the temporary directories of a killed build), is made read-only there,
        then renamed within ``envs/``, which needs no write access to it. A task never sees
        an env under its key that is writable or incomplete.
        """
        staged = self.envs_dir / f".{dest.name}"
        os.chmod(dest, _PRIVATE_DIR)
        os.rename(dest, staged)
        try:
            os.chmod(staged, tree.READ_ONLY_DIR)
            tree.fsync_dir(staged)
            os.rename(staged, final)
        except BaseException:
            tree.remove_tree(staged)
            raise
        tree.fsync_dir(self.envs_dir)
