"""Package trees shared between envs, as pnpm and Nix share packages: one copy per content.

Every top-level directory of an env's site-packages (a package or a ``*.dist-info``) is a
tree. A tree installed identically in many envs is stored once, compiled and read-only, under
the cache's ``objects/trees/``, and each env's site-packages links to it. A new env then costs
a few directories and symlinks instead of a copy of every directory (directories can't be
hardlinked, so file-level dedupe can't share them), and compiles only the trees no env had
before. Layout::

    objects/trees/<digest>/        a tree: dirs 0555, files 0444/0555, readable by everyone
    objects/trees/<digest>.json    its manifest, written last: a tree without one is incomplete
    objects/trees/.<digest>.*.json a manifest being written (a killed build's leftover)
    <env>/lib/python3.X/site-packages/.trees -> ../../../../../objects/trees
    <env>/lib/python3.X/site-packages/<name> -> .trees/<digest>

The links are relative: a build in ``tmp/<key>.<rand>/`` and the env ``envs/<key>/`` are at
the same depth under the cache root, so they survive the rename, and so does moving the whole
cache. The ``.trees`` hop keeps each package's link within 59 bytes, which ext4 stores in
the inode itself; ``../../../../../objects/trees/<digest>`` would take a 4 KiB block per link,
as much as the directory it replaces. Python never resolves these links: ``__file__``,
tracebacks and ``importlib.metadata`` see paths under the env's site-packages.

The digest covers what the tree's compiled form depends on: the relative path, type, executable
bit and sha256 of every entry, the tree's path in the env (it is embedded in the ``.pyc``) and
the interpreter's cache tag. Trees holding symlinks or special files are not shared (a link
could point out of the tree and would then resolve elsewhere from the store).

Concurrency: builds hold the cache's gc lock shared from choosing trees until their env is in
``envs/`` (whose manifest then names the trees), and gc prunes only while holding it
exclusively, so a tree an env is about to use is never pruned. Builds publish trees under
``locks/trees.lock``: the first one moves its copy in, later ones discard theirs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from envcache import tree
from envcache.manifest import FileEntry, differences, file_sha256, scan
from envcache.objects import ObjectStore

TREE_FORMAT = 1
"""Part of every digest: bump when what a stored tree holds changes (e.g. how it's compiled)."""
LINK_DIR = ".trees"
_PYCACHE = "__pycache__"
_ROOT = "."
"""The tree's own directory in its manifest."""
_DIGEST = re.compile(r"[a-z2-7]{52}")


@dataclass(frozen=True)
class TreeManifest:
    """The entries of one stored tree, its bytecode included; ``.`` is the tree's directory."""

    digest: str
    name: str
    """The top-level name the tree was installed as, for people reading the store."""
    files: dict[str, FileEntry]

    @property
    def size(self) -> int:
        """Bytes of the tree's regular files."""
        return sum(entry.size for entry in self.files.values())

    def to_json(self) -> str:
        """The manifest file's text, compact."""
        files = {path: entry.to_json() for path, entry in self.files.items()}
        data = {"format": TREE_FORMAT, "digest": self.digest, "name": self.name, "files": files}
        return json.dumps(data, separators=(",", ":"), sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TreeManifest:
        """Parse a manifest's text; raises ValueError (or KeyError/TypeError) if malformed."""
        data: dict[str, Any] = json.loads(text)
        if data.get("format") != TREE_FORMAT:
            raise ValueError(f"unknown tree manifest format {data.get('format')!r}")
        return cls(
            digest=str(data["digest"]),
            name=str(data["name"]),
            files={str(p): FileEntry.from_json(e) for p, e in data["files"].items()},
        )


# A manifest parsed once per process, reused while the file's identity and times are unchanged.
_StatKey = tuple[int, int, int, int]
_loaded: dict[Path, tuple[_StatKey, TreeManifest]] = {}


@dataclass
class Sharing:
    """The trees of one build: those linked so far and those the store doesn't have yet."""

    env_dir: Path
    trees: dict[str, str] = field(default_factory=dict)
    """Env-relative path of each link -> the tree's digest: the env manifest's ``trees``."""
    pending: dict[Path, str] = field(default_factory=dict)
    """Installed trees to compile, then :meth:`TreeStore.publish`: path -> digest."""


class TreeStore:
    """Trees under ``root`` (``objects/trees``); ``locks`` and ``trash`` are the cache's."""

    def __init__(
        self, root: Path, locks: Path, trash: Path, objects: ObjectStore | None = None
    ) -> None:
        self.root = root
        self.locks = locks
        self.trash = trash
        self.objects = objects
        """Where a new tree's files are deduplicated by content with every other tree's."""

    def path(self, digest: str) -> Path:
        """The stored tree with ``digest``."""
        return self.root / digest

    def manifest_path(self, digest: str) -> Path:
        """The manifest of the tree with ``digest``; the tree is complete once it exists."""
        return self.root / f"{digest}.json"

    def has(self, digest: str) -> bool:
        """Whether the tree is stored and complete."""
        return self.manifest_path(digest).exists()

    def load(self, digest: str) -> TreeManifest:
        """The tree's manifest; raises FileNotFoundError, or ValueError if it is malformed."""
        path = self.manifest_path(digest)
        info = path.stat()
        key = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        cached = _loaded.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            manifest = TreeManifest.from_json(path.read_text(encoding="utf-8"))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed: {exc!r}") from exc
        if manifest.digest != digest:
            raise ValueError(f"it belongs to tree {manifest.digest}")
        _loaded[path] = (key, manifest)
        return manifest

    # --- building an env ----------------------------------------------------------------------

    def share(self, env_dir: Path, cache_tag: str) -> Sharing:
        """Link each tree of ``env_dir``'s site-packages the store has; the others are pending.

        The caller compiles the env (compileall skips the linked trees), then calls
        :meth:`publish`. Call with the gc lock held shared (see the module docstring).
        """
        sharing = Sharing(env_dir)
        site = site_packages(env_dir)
        if site is None:
            return sharing  # an unexpected layout: nothing is shared, the env is as before
        context = f"{cache_tag}\0{site.relative_to(env_dir).as_posix()}"
        for name in sorted(os.listdir(site)):
            path = site / name
            if name == _PYCACHE or name.startswith(".") or not _is_real_dir(path):
                continue
            _drop_bytecode(path)
            digest = tree_digest(path, f"{context}/{name}")
            if digest is None:
                continue
            if self.has(digest) and self._intact(digest, path):
                tree.remove_tree(path)
                self._link(path, digest)
                sharing.trees[path.relative_to(env_dir).as_posix()] = digest
            else:
                sharing.pending[path] = digest  # new, or damaged: published again below
        return sharing

    def publish(self, sharing: Sharing) -> None:
        """Store the compiled pending trees of ``sharing`` and link them."""
        for path, digest in sharing.pending.items():
            self._publish(path, digest)
            sharing.trees[path.relative_to(sharing.env_dir).as_posix()] = digest
        sharing.pending.clear()

    def _publish(self, path: Path, digest: str) -> None:
        """Store one compiled tree (or drop it if another build stored it first), and replace
        it in its env by a link."""
        tree.make_read_only(path)  # its contents; the directory itself after the move
        files = scan(path, skip=())
        if self.objects is not None:
            # Files equal to another tree's (licenses, INSTALLER, unchanged modules between
            # two versions of a package) share its inode, hardlinked from uv's cache or not.
            self.objects.dedupe(path, files, hardlinked=True)
        files[_ROOT] = FileEntry("dir", mode=tree.READ_ONLY_DIR)
        recorded = TreeManifest(digest, path.name, files)
        tree.fsync_tree(path)
        with FileLock(self.locks / "trees.lock", mode=0o600):
            if self.has(digest) and self._intact(digest, path):
                tree.remove_tree(path)  # a concurrent build stored it first: use theirs
            else:
                final = self.path(digest)
                # Damaged (the manifest goes first: never used again), or moved in by a killed
                # publish that wrote no manifest: replaced, which repairs every env using it.
                self.manifest_path(digest).unlink(missing_ok=True)
                if os.path.lexists(final):
                    self._discard(final)
                # Moved while still writable: moving a directory needs write access to it.
                os.rename(path, final)
                os.chmod(final, tree.READ_ONLY_DIR)
                temporary = self.root / f".{digest}.{secrets.token_hex(4)}.json"
                tree.write_read_only(temporary, recorded.to_json())
                os.rename(temporary, self.manifest_path(digest))
                tree.fsync_dir(self.root)
        self._link(path, digest)

    def _intact(self, digest: str, installed: Path) -> bool:
        """Whether the stored tree matches its manifest, digests included: a build must never
        link a damaged tree (rebuilding is how an admin repairs an env).

        Cheap: a stored file that is the same inode as the file just installed at its path
        (both hardlinked from uv's cache) has the content hashed for the digest, which equals
        the recorded one; only the others (bytecode, RECORD...) are hashed again.
        """
        try:
            recorded = self.load(digest).files
            stored = self.path(digest)
            found = scan(stored, digests=False, skip=())
            found[_ROOT] = FileEntry("dir", mode=stored.lstat().st_mode & 0o7777)
        except (OSError, ValueError):
            return False
        if differences(recorded, found, deep=False):
            return False
        for relative, entry in recorded.items():
            if entry.type != "file":
                continue
            path = stored / relative
            try:
                same = os.path.samefile(path, installed / relative)
            except OSError:
                same = False
            if not same and file_sha256(path) != entry.sha256:
                return False
        return True

    def _link(self, path: Path, digest: str) -> None:
        helper = path.parent / LINK_DIR
        if not helper.is_symlink():
            helper.symlink_to(os.path.relpath(self.root, path.parent))
        path.symlink_to(link_target(digest))

    # --- checking an env ----------------------------------------------------------------------

    def verify(self, digest: str, *, deep: bool, shown_as: str) -> list[str]:
        """Differences between the stored tree and its manifest, named as ``shown_as/...``.

        Quick compares every entry's type, mode and size and finds added ones; ``deep`` also
        compares sha256. A missing tree or manifest is a difference: the env using it is broken.
        """
        try:
            recorded = self.load(digest)
        except FileNotFoundError:
            return [f"{shown_as}: shared tree {digest} is missing"]
        except (OSError, ValueError) as exc:
            return [f"{shown_as}: shared tree {digest} has an unreadable manifest ({exc})"]
        path = self.path(digest)
        try:
            found = scan(path, digests=deep, skip=())
            found[_ROOT] = FileEntry("dir", mode=path.lstat().st_mode & 0o7777)
        except FileNotFoundError:
            return [f"{shown_as}: shared tree {digest} is missing"]
        if not path.is_dir() or path.is_symlink():
            return [f"{shown_as}: shared tree {digest} is not a directory"]
        return [
            f"{shown_as if relative == _ROOT else f'{shown_as}/{relative}'}: {problem}"
            for relative, problem in differences(recorded.files, found, deep)
        ]

    # --- gc -----------------------------------------------------------------------------------

    def prune(self, referenced: Iterable[str]) -> int:
        """Remove every tree not in ``referenced`` and the leftovers of killed publishes;
        returns how many trees were removed. Call with the gc lock held exclusively.

        Crash-safe: a tree's manifest goes first (the tree is never used again), then the tree
        is renamed into the trash and deleted.
        """
        keep = set(referenced)
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return 0
        doomed = []
        for name in sorted(names):
            digest = name.removesuffix(".json")
            if name.startswith("."):
                (self.root / name).unlink(missing_ok=True)  # no build is publishing now
            elif not _DIGEST.fullmatch(digest) or digest in keep:
                continue
            elif name.endswith(".json"):
                self.manifest_path(digest).unlink()
            else:
                doomed.append(digest)
        self.trash.mkdir(mode=0o700, exist_ok=True)
        moved = []
        for digest in doomed:
            target = self.trash / f"tree-{digest}.{secrets.token_hex(4)}"
            tree.move_dir(self.path(digest), target)
            moved.append(target)
        tree.fsync_dir(self.root)
        for target in moved:
            tree.remove_tree(target)
        return len(moved)

    def _discard(self, path: Path) -> None:
        target = self.trash / f"tree-{path.name}.{secrets.token_hex(4)}"
        tree.move_dir(path, target)
        tree.remove_tree(target)


def site_packages(env_dir: Path) -> Path | None:
    """The env's one ``lib/python3.X/site-packages`` directory, or None."""
    found = [path for path in env_dir.glob("lib/python3.*/site-packages") if _is_real_dir(path)]
    return found[0] if len(found) == 1 else None


def link_target(digest: str) -> str:
    """What a package's symlink in site-packages holds: relative, through ``.trees``."""
    return f"{LINK_DIR}/{digest}"


def links(trees: Mapping[str, str]) -> dict[str, str]:
    """Env-relative link path -> target, for a manifest's ``trees`` (path -> digest)."""
    return {path: link_target(digest) for path, digest in trees.items()}


def linked_from(env_dir: Path) -> set[str]:
    """Digests of the trees ``env_dir``'s symlinks name, whatever its manifest says (gc uses
    it for envs whose manifest is unreadable)."""
    site = site_packages(env_dir)
    if site is None:
        return set()
    found = set()
    prefix = LINK_DIR + "/"
    with os.scandir(site) as entries:
        for entry in entries:
            if entry.is_symlink():
                target = os.readlink(entry.path)
                if target.startswith(prefix):
                    found.add(target.removeprefix(prefix))
    return found


def tree_digest(path: Path, context: str) -> str | None:
    """The content digest of the installed tree at ``path`` (base32, 52 characters), or None
    if it can't be shared (it holds a symlink or a special file). An empty directory is a tree
    too (e.g. a wheel's ``*.libs`` with nothing in it): one stored copy instead of one per env.

    Modes enter only as the executable bit: a file hardlinked from uv's cache may already be
    read-only from an earlier build, and every stored file is made 0444/0555 anyway.
    """
    entries = scan(path, skip=())
    digest = hashlib.sha256(f"isolate-tree/{TREE_FORMAT}\0{context}\0".encode())
    for relative, entry in entries.items():
        if entry.type == "dir":
            digest.update(f"d\0{relative}\0".encode())
        elif entry.type == "file":
            executable = "x" if entry.mode & 0o100 else "-"
            digest.update(f"f\0{relative}\0{executable}\0{entry.sha256}\0".encode())
        else:
            return None
    return base64.b32encode(digest.digest()).decode().rstrip("=").lower()


def _drop_bytecode(path: Path) -> None:
    """Remove ``__pycache__`` dirs a seeder copied in (virtualenv's pip: its own build of them,
    which differs between builds): the compile step makes them again, reproducibly, and the
    import system never reads one without its source."""
    for directory, dirnames, _files in os.walk(path):
        if _PYCACHE in dirnames:
            dirnames.remove(_PYCACHE)
            tree.remove_tree(Path(directory, _PYCACHE))


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()
