"""A content-addressed store of env files: identical files in different envs share one inode.

uv hardlinks the files it installs from its cache, but the files made at build time (bytecode,
``RECORD``, the venv's own scripts) are new in every env; bytecode alone is often as big as the
sources. Nix's ``auto-optimise-store`` does the same: hardlink every file to
``objects/files/<sha256>-<mode>``. An object whose link count drops to 1 is used by no env
any more and can be deleted by gc. Package trees (trees.py) share whole directories; this
store shares the files of the env's own that are left (console scripts, single-file modules,
their bytecode, the venv's files) and the files equal between trees (licenses, ``INSTALLER``,
modules unchanged between two versions of a package).

One flat directory, not git's 256 shards: each shard is a 4 KiB directory block, up to 1 MiB
before any object, and ext4 indexes large directories anyway. It is private (0700): the
objects are only reached through the envs and trees that link them.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from envcache.manifest import FileEntry, file_sha256


class ObjectStore:
    """Objects under ``root``, named by content digest and mode (mode is per inode)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def files_dir(self) -> Path:
        """The objects themselves."""
        return self.root / "files"

    def path(self, entry: FileEntry) -> Path:
        """Where the object for a file with ``entry``'s content and mode lives."""
        return self.files_dir / f"{entry.sha256}-{entry.mode:04o}"

    def dedupe(
        self, env_dir: Path, files: Mapping[str, FileEntry], *, hardlinked: bool = False
    ) -> int:
        """Hardlink ``env_dir``'s files (described by ``files``) with identical stored ones.

        Empty files are left alone, and so are files already hardlinked elsewhere (from uv's
        cache) unless ``hardlinked``: a package tree's files are, and identical ones in two
        trees are two inodes in uv's cache. A file with no object yet becomes the object.
        Directories made read-only are made writable for the replacement and read-only again.
        Returns how many files now share a stored inode.
        """
        by_dir: dict[Path, list[tuple[Path, FileEntry]]] = defaultdict(list)
        for relative, entry in files.items():
            if entry.type == "file" and entry.size:
                path = env_dir / relative
                by_dir[path.parent].append((path, entry))
        shared = 0
        for directory, members in by_dir.items():
            mode = os.stat(directory).st_mode
            os.chmod(directory, mode | 0o200)
            try:
                shared += sum(self._share(path, entry, hardlinked) for path, entry in members)
            finally:
                os.chmod(directory, mode)
        return shared

    def _share(self, path: Path, entry: FileEntry, hardlinked: bool) -> bool:
        info = path.lstat()
        if info.st_nlink > 1 and not hardlinked:
            return False
        target = self.path(entry)
        try:
            os.link(path, target)  # the first env with this content provides the object
            return True
        except FileExistsError:
            pass
        except OSError as exc:
            if exc.errno == errno.EMLINK:  # the filesystem's link limit: keep the copy
                return False
            raise
        stored = target.lstat()
        if (stored.st_dev, stored.st_ino) == (info.st_dev, info.st_ino):
            return True  # already the object (an inode of uv's cache shared by two trees)
        if stored.st_mode != info.st_mode or file_sha256(target) != entry.sha256:
            return False  # a damaged object is never spread
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        try:
            os.link(target, temporary)
        except OSError as exc:
            if exc.errno == errno.EMLINK:
                return False
            raise
        os.replace(temporary, path)
        return True

    def prune(self) -> int:
        """Delete objects no env links to any more (link count 1); returns bytes freed."""
        freed = 0
        try:
            names = os.listdir(self.files_dir)
        except FileNotFoundError:
            return 0
        for name in names:
            path = self.files_dir / name
            info = path.lstat()
            if info.st_nlink == 1:
                path.unlink()
                freed += info.st_size
        return freed
