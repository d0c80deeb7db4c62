"""Writes the scheduler's heartbeat (what it holds: :mod:`isolate.health`).

A new file renamed over the old one, at most every :data:`BEAT_EVERY` seconds, from the loop.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("isolate.scheduler")

BEAT_EVERY = 5.0  # seconds between two writes of the file


class Heartbeat:
    """Writes the scheduler's health at most every ``every`` seconds; never raises (a full
    disk must not stop the loop: the failure is logged once until a write works again)."""

    def __init__(self, path: Path, *, every: float = BEAT_EVERY) -> None:
        self.path = path
        self.every = every
        self._last = float("-inf")
        self._failing = False

    def beat(self, state: Callable[[], Mapping[str, Any]], *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        try:
            self._write({**state(), "heartbeat_at": time.time(), "pid": os.getpid()})
        except Exception as exc:  # the loop goes on whatever the file does
            if not self._failing:
                log.warning("cannot write the health file %s: %s", self.path, exc)
            self._failing = True
        else:
            self._failing = False

    def _write(self, document: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        data = json.dumps(document, sort_keys=True, default=str).encode()
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        try:
            os.fchmod(fd, 0o644)
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(staging, self.path)
