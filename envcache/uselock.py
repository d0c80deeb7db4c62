"""The use lock of an env: running tasks share it, removal takes it exclusively or skips."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UseLock:
    """An ``fcntl.flock`` on one file per env.

    flock locks belong to the open file description: a child forked while the lock is held
    shares it, and the lock goes away when the holder dies, so a killed supervisor never leaves
    an env pinned. The descriptor is close-on-exec, so a task's exec'ed process never holds it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the lock shared (waits while someone holds it exclusively)."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    @contextmanager
    def try_exclusive(self) -> Iterator[bool]:
        """Try once to hold the lock exclusively; yields whether it was taken."""
        fd = self._open()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
            else:
                yield True
        finally:
            os.close(fd)

    def _open(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
