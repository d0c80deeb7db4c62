"""A content-addressed store of env files: identical files in different envs share one inode.

uv hardlinks the files it installs from its cache, but the files made at build time (bytecode,
``RECORD``, the venv's own scripts) are new in every env; bytecode alone is often as big as the
sources. Nix's ``auto-optimise-store`` does the same: hardlink every file to
``objects/<sha256[:2]>/<sha256>-<mode>``. An object whose link count drops to 1 is used by no
env any more and can be deleted by gc. Package trees (trees.py) share whole directories; this
store shares the files of the env's own that are left (console scripts, single-file modules,
their bytecode, the venv's files).
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

    def path(self, entry: FileEntry) -> Path:
        """Where the object for a file with ``entry``'s content and mode lives."""
        return self.root / entry.sha256[:2] / f"{entry.sha256}-{entry.mode:04o}"

    def dedupe(self, env_dir: Path, files: Mapping[str, FileEntry]) -> int:
        """Hardlink ``env_dir``'s files (described by ``files``) with identical stored ones.

        Files already hardlinked (from uv's cache) and empty files are left alone; a file with
        no object yet becomes the object. Directories made read-only are made writable for the
        replacement and read-only again. Returns how many files now share a stored inode.
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
                shared += sum(self._share(path, entry) for path, entry in members)
            finally:
                os.chmod(directory, mode)
        return shared

    def _share(self, path: Path, entry: FileEntry) -> bool:
        info = path.lstat()
        if info.st_nlink > 1:
            return False
        target = self.path(entry)
        target.parent.mkdir(mode=0o700, exist_ok=True)
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
            shards = os.listdir(self.root)
        except FileNotFoundError:
            return 0
        for shard in shards:
            if len(shard) != 2:
                continue  # trees/ (trees.py prunes it) is no shard
            directory = self.root / shard
            for name in os.listdir(directory):
                path = directory / name
                info = path.lstat()
                if info.st_nlink == 1:
                    path.unlink()
                    freed += info.st_size
        return freed
