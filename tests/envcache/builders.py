"""Real builders with a build counter, shared by the tests and ensure_main.py's processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

from envcache.backends import UvBuilder


class CountingUvBuilder(UvBuilder):
    """The uv builder, appending one line per build to ``counter``; ``pause`` seconds after
    creating the venv leave a window to observe (or kill) a build in progress."""

    def __init__(self, counter: Path, pause: float = 0.0) -> None:
        self.counter = counter
        self.pause = pause

    def _create(self, dest: Path, python: str, cache_dir: Path) -> None:
        with self.counter.open("a") as handle:
            handle.write(f"{os.getpid()} {dest.name}\n")
        super()._create(dest, python, cache_dir)
        # The venv is complete (uv has exited): a test may kill this build now.
        self.counter.with_suffix(".created").touch()
        time.sleep(self.pause)

    def builds(self) -> int:
        """How many builds started so far, in every process sharing ``counter``."""
        return len(self.counter.read_text().splitlines()) if self.counter.exists() else 0
