"""Operations on a directory tree: make it read-only, make it durable, remove it."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

READ_ONLY_DIR = 0o555


def make_read_only(root: Path) -> None:
    """Files 0444 (0555 if executable), directories 0555; the root itself is left alone."""
    for directory, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(directory, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                os.chmod(path, 0o555 if mode & stat.S_IXUSR else 0o444)
        for name in dirnames:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, READ_ONLY_DIR)


def write_read_only(path: Path, content: str | bytes) -> None:
    """Create ``path`` (it must not exist) with ``content``, durable, then make it 0444."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, 0o444)


def fsync_tree(root: Path) -> None:
    """fsync every regular file and directory, so the rename never exposes lost data."""
    for directory, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        fsync_dir(Path(directory))


def fsync_dir(path: Path) -> None:
    """fsync a directory, making the entries created or renamed in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_dir(source: Path, target: Path) -> None:
    """Rename the directory ``source`` to ``target`` in another directory, even if read-only.

    Moving a directory to another parent rewrites its ``..`` entry, which needs write access
    to the directory itself: root has it whatever the mode, the owner of a read-only env or
    tree does not. For the owner it is made writable (by the owner only) just for the move;
    the moved directory keeps its mode. Only for what is being removed (an env or a tree on
    its way to the trash): a published env is never writable (see ``EnvCache._publish``).
    """
    try:
        os.rename(source, target)
        return
    except PermissionError:
        mode = stat.S_IMODE(os.lstat(source).st_mode)
        if mode & stat.S_IWUSR or os.path.islink(source):
            raise  # not the directory's mode: its parents', or not its owner
    os.chmod(source, mode | stat.S_IWUSR)
    try:
        os.rename(source, target)
    except BaseException:
        os.chmod(source, mode)
        raise
    os.chmod(target, mode)


def remove_tree(path: Path) -> None:
    """Best-effort removal of a read-only tree (a failed or killed build, a removed env), as
    root or as the tree's owner.

    Only directories are made writable, each before it is read (its owner could not empty
    a directory it may not list): files may share their inode with uv's cache.
    """
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    pending = [os.fspath(path)]
    while pending:
        directory = pending.pop()
        try:
            os.chmod(directory, 0o700)
        except OSError:
            pass
        try:
            with os.scandir(directory) as entries:
                pending += [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]
        except OSError:
            pass
    shutil.rmtree(path, ignore_errors=True)
