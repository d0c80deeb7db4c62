"""Parallel attempts: ``parallelism`` slots, each a started process and a thread waiting on it.

Processes are forked from the scheduler's main thread only (``submit``); the waiting threads
just block in :func:`localexec.supervisor.wait` and hand outcomes back through a queue.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from localexec import supervisor
from localexec.attempt import Attempt, Outcome, Running

K = TypeVar("K")


@dataclass(frozen=True)
class Finished(Generic[K]):
    key: K
    running: Running
    outcome: Outcome


class Executor(Generic[K]):
    def __init__(self, parallelism: int) -> None:
        if parallelism < 1:
            raise ValueError("parallelism must be at least 1")
        self.parallelism = parallelism
        self._active: dict[K, Running] = {}
        self._done: queue.Queue[Finished[K]] = queue.Queue()
        self._threads: list[threading.Thread] = []

    @property
    def free_slots(self) -> int:
        return self.parallelism - len(self._active)

    @property
    def busy(self) -> bool:
        return bool(self._active)

    def submit(self, key: K, attempt: Attempt, on_start: Callable[[Running], None]) -> Running:
        """Start ``attempt`` now (fork in this thread) and wait for it in the background."""
        running = supervisor.start(attempt)
        self._active[key] = running
        on_start(running)
        thread = threading.Thread(target=self._wait, args=(key, running), daemon=True)
        thread.start()
        self._threads.append(thread)
        return running

    def _wait(self, key: K, running: Running) -> None:
        self._done.put(Finished(key, running, supervisor.wait(running)))

    def finished(self, timeout: float = 0.0) -> list[Finished[K]]:
        """Outcomes that arrived, waiting up to ``timeout`` seconds for the first one."""
        results: list[Finished[K]] = []
        try:
            results.append(self._done.get(timeout=timeout) if timeout else self._done.get_nowait())
            while True:
                results.append(self._done.get_nowait())
        except queue.Empty:
            pass
        for item in results:
            self._active.pop(item.key, None)
        self._threads = [t for t in self._threads if t.is_alive()]
        return results
