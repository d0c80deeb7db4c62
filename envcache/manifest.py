"""The manifest written into every env, and verification of an env against it.

The manifest (``<env>/isolate-env.json.gz``) records what the env was built from (key,
canonical lock, interpreter, builder and tool versions), every file of the env's own (type,
mode, size, sha256 or symlink target) and the shared package trees it links to (their digests:
each tree has its own manifest, see trees.py), so a later change to the env is detected.

It is compact JSON, gzip-compressed: every env carries one and it is mostly hex digests, so
compressed it takes one 4 KiB block instead of two for a dozen packages. ``zcat`` shows it,
and so does ``isolate env show KEY --json``. Envs built before (format 1 and 2) have an
uncompressed ``isolate-env.json``; both are read.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import zlib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from envcache.errors import CorruptEnvError

MANIFEST_NAME = "isolate-env.json.gz"
LEGACY_MANIFEST_NAME = "isolate-env.json"
"""Where formats 1 and 2 were written, uncompressed."""
MANIFEST_NAMES = frozenset({MANIFEST_NAME, LEGACY_MANIFEST_NAME})
"""What a scan of an env leaves out: the manifest is not one of the files it records."""
MANIFEST_FORMAT = 3
"""2 added shared trees, 3 compression (the JSON is the same); 1 and 2 are still read."""
_READABLE_FORMATS = (1, 2, 3)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    """One path in an env: ``file`` (mode, size, sha256), ``dir`` (mode) or ``symlink`` (target)."""

    type: str
    mode: int = 0
    size: int = 0
    sha256: str = ""
    target: str = ""

    def to_json(self) -> dict[str, Any]:
        """Compact JSON: only the fields that mean something for the type."""
        if self.type == "symlink":
            return {"type": "symlink", "target": self.target}
        data: dict[str, Any] = {"type": self.type, "mode": f"{self.mode:04o}"}
        if self.type == "file":
            data.update(size=self.size, sha256=self.sha256)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileEntry:
        """Inverse of :meth:`to_json`."""
        return cls(
            type=str(data["type"]),
            mode=int(data.get("mode", "0"), 8),
            size=int(data.get("size", 0)),
            sha256=str(data.get("sha256", "")),
            target=str(data.get("target", "")),
        )


@dataclass(frozen=True)
class LinkStats:
    """How the env's regular files got there: hardlinks shared with the tool's cache, or copies."""

    requested: str
    hardlinked: int
    """Regular files sharing their inode with the tool's cache after the install."""
    copied: int
    """Regular files of their own after the install, before bytecode (RECORD, the venv's
    files); counted before package trees are shared."""
    deduplicated: int = 0
    """Files then hardlinked with identical files of other envs (see objects.py)."""


@dataclass(frozen=True)
class Manifest:
    """What an env was built from and the files it holds."""

    key: str
    lock: str
    """The canonical lock (JSON text) the key was computed from."""
    interpreter: dict[str, Any]
    builder: str
    builder_format_version: int
    tools: dict[str, str]
    """Versions of the build tools, e.g. ``{"uv": "0.13.9"}``."""
    created: str
    """UTC time of the build, ISO 8601."""
    build_seconds: float
    links: LinkStats
    files: dict[str, FileEntry] = field(repr=False)
    """The env's own paths; the symlinks to shared trees are in ``trees``, not here."""
    trees: dict[str, str] = field(default_factory=dict, repr=False)
    """Env-relative path of each symlink to a shared tree -> that tree's digest."""
    shared_size: int = 0
    """Bytes of the shared trees' regular files (counted again in every env using them)."""
    format: int = MANIFEST_FORMAT

    def warnings(self) -> list[str]:
        """A warning when hardlinking was requested but no installed file was hardlinked."""
        links = self.links
        if links.requested == "hardlink" and links.hardlinked == 0 and json.loads(self.lock):
            return [
                f"no file was hardlinked from uv's cache ({links.copied} copied): every env "
                "uses its own disk space; put the cache's uv-cache/ and envs/ on one filesystem"
            ]
        return []

    @property
    def total_size(self) -> int:
        """Bytes of all regular files the env shows, its own and its shared trees' (hardlinked
        and shared ones counted in full)."""
        return sum(entry.size for entry in self.files.values()) + self.shared_size

    def to_json(self) -> str:
        """The manifest file's text: compact, as every env carries one (a quarter of an env's
        own disk space when indented)."""
        data = asdict(self)
        data["files"] = {path: entry.to_json() for path, entry in sorted(self.files.items())}
        data["total_size"] = self.total_size
        return json.dumps(data, separators=(",", ":"), sort_keys=True) + "\n"

    def to_bytes(self) -> bytes:
        """The manifest file's content: the JSON, gzip-compressed, reproducibly (no mtime)."""
        return gzip.compress(self.to_json().encode("utf-8"), compresslevel=9, mtime=0)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest file's text; raises ValueError (or KeyError/TypeError) if malformed."""
        data = json.loads(text)
        if data.get("format") not in _READABLE_FORMATS:
            raise ValueError(f"unknown manifest format {data.get('format')!r}")
        return cls(
            key=str(data["key"]),
            lock=str(data["lock"]),
            interpreter=dict(data["interpreter"]),
            builder=str(data["builder"]),
            builder_format_version=int(data["builder_format_version"]),
            tools={str(k): str(v) for k, v in data["tools"].items()},
            created=str(data["created"]),
            build_seconds=float(data["build_seconds"]),
            links=LinkStats(**data["links"]),
            files={str(p): FileEntry.from_json(e) for p, e in data["files"].items()},
            trees={str(p): str(d) for p, d in data.get("trees", {}).items()},
            shared_size=int(data.get("shared_size", 0)),
            format=int(data["format"]),
        )

    @classmethod
    def load(cls, env_dir: Path) -> Manifest:
        """Read ``env_dir``'s manifest; raises CorruptEnvError if it is missing or malformed."""
        try:
            try:
                text = gzip.decompress((env_dir / MANIFEST_NAME).read_bytes()).decode("utf-8")
            except FileNotFoundError:
                text = (env_dir / LEGACY_MANIFEST_NAME).read_text(encoding="utf-8")
            return cls.from_json(text)
        except FileNotFoundError as exc:
            raise CorruptEnvError(
                f"env {env_dir} has no manifest; remove the env and build it again"
            ) from exc
        except (OSError, ValueError, KeyError, TypeError, EOFError, zlib.error) as exc:
            raise CorruptEnvError(
                f"env {env_dir} has an unreadable manifest ({exc}); "
                "remove the env and build it again"
            ) from exc


def scan(
    env_dir: Path, *, digests: bool = True, skip: Collection[str] = MANIFEST_NAMES
) -> dict[str, FileEntry]:
    """Every path under ``env_dir`` except those named in ``skip`` (the manifest), relative
    with ``/`` separators, in a stable order. Symlinks are recorded, never followed."""
    return {relative: _entry(path, digests) for relative, path in _walk(env_dir, "", skip)}


def link_stats(env_dir: Path, requested: str) -> LinkStats:
    """Count regular files that share their inode with another path (uv's cache) vs copies.

    ``st_nlink > 1`` is the proxy: a freshly built env's files are linked only from uv's cache.
    """
    hardlinked = copied = 0
    for _relative, path in _walk(env_dir, "", MANIFEST_NAMES):
        info = path.lstat()
        if stat.S_ISREG(info.st_mode):
            if info.st_nlink > 1:
                hardlinked += 1
            else:
                copied += 1
    return LinkStats(requested, hardlinked, copied)


def verify(
    env_dir: Path,
    *,
    deep: bool = False,
    manifest: Manifest | None = None,
    links: Mapping[str, str] | None = None,
) -> list[str]:
    """Differences between ``env_dir``'s own paths and its manifest; empty means intact.

    Quick checks every path's presence, type, mode, size and symlink target, and that nothing
    was added; ``deep`` also compares every file's sha256. ``manifest``, if given, is the
    already loaded manifest of ``env_dir``. ``links`` (path -> target) are the symlinks to
    shared trees the manifest's ``trees`` stand for; the trees' content is checked by the
    caller (trees.py).
    """
    if manifest is None:
        try:
            manifest = Manifest.load(env_dir)
        except CorruptEnvError as exc:
            return [str(exc)]
    recorded = dict(manifest.files)
    recorded.update({path: FileEntry("symlink", target=t) for path, t in (links or {}).items()})
    found = scan(env_dir, digests=deep)
    return [f"{path}: {problem}" for path, problem in differences(recorded, found, deep)]


def differences(
    recorded: Mapping[str, FileEntry], found: Mapping[str, FileEntry], deep: bool
) -> list[tuple[str, str]]:
    """(path, problem) for every path missing, added or changed, in that order."""
    result = [(path, "missing") for path in sorted(recorded.keys() - found.keys())]
    result += [(path, "not in the manifest") for path in sorted(found.keys() - recorded.keys())]
    for path in sorted(recorded.keys() & found.keys()):
        result += [(path, d) for d in _compare(recorded[path], found[path], deep)]
    return result


def _compare(recorded: FileEntry, found: FileEntry, deep: bool) -> list[str]:
    if recorded.type != found.type:
        return [f"is a {found.type}, was a {recorded.type}"]
    if recorded.type == "symlink":
        return [] if recorded.target == found.target else [f"points to {found.target!r}"]
    differences = []
    if recorded.mode != found.mode:
        differences.append(f"mode {found.mode:04o}, was {recorded.mode:04o}")
    if recorded.type == "file":
        if recorded.size != found.size:
            differences.append(f"size {found.size}, was {recorded.size}")
        elif deep and recorded.sha256 != found.sha256:
            differences.append("content changed (sha256 differs)")
    return differences


def _walk(directory: Path, prefix: str, skip: Collection[str]) -> Iterator[tuple[str, Path]]:
    with os.scandir(directory) as entries:
        children = sorted(entries, key=lambda e: e.name)
    for child in children:
        relative = f"{prefix}{child.name}"
        if relative in skip:
            continue
        path = Path(child.path)
        yield relative, path
        if child.is_dir(follow_symlinks=False):
            yield from _walk(path, f"{relative}/", skip)


def _entry(path: Path, digests: bool) -> FileEntry:
    info = path.lstat()
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        return FileEntry("symlink", target=os.readlink(path))
    if stat.S_ISDIR(info.st_mode):
        return FileEntry("dir", mode=mode)
    if stat.S_ISREG(info.st_mode):
        return FileEntry("file", mode, info.st_size, file_sha256(path) if digests else "")
    return FileEntry("other", mode=mode)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
