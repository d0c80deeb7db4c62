"""Parallel attempts: ``parallelism`` slots, each a started process and a thread waiting on it.

Processes are forked from the scheduler's main thread only (``submit``); the waiting threads
just block in :func:`localexec.supervisor.wait` and hand outcomes back through a queue.
"""

from __future__ import annotations

import queue
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from localexec import supervisor
from localexec.attempt import Attempt, Outcome, Running
from localexec.cgroups import AttemptCgroup, Hierarchies, release
from localexec.sandbox import layers_for
from localexec.spares import SpareKind, SparePool, start_warm, warm_start_possible

K = TypeVar("K")


@dataclass(frozen=True)
class Finished(Generic[K]):
    key: K
    running: Running
    outcome: Outcome


class Executor(Generic[K]):
    def __init__(
        self,
        parallelism: int,
        *,
        spares: SparePool | None = None,
        cgroups: Hierarchies | None = None,
    ) -> None:
        if parallelism < 1:
            raise ValueError("parallelism must be at least 1")
        self.parallelism = parallelism
        self.spares = spares
        self.cgroups = cgroups
        self._active: dict[K, Running] = {}
        self._done: queue.Queue[Finished[K]] = queue.Queue()
        self._threads: list[threading.Thread] = []

    @property
    def free_slots(self) -> int:
        return self.parallelism - len(self._active)

    @property
    def busy(self) -> bool:
        return bool(self._active)

    @property
    def running_keys(self) -> frozenset[K]:
        """The keys of the attempts started and not yet collected by :meth:`finished`."""
        return frozenset(self._active)

    def submit(self, key: K, attempt: Attempt, on_start: Callable[[Running], None]) -> Running:
        """Start ``attempt`` now (fork in this thread) and wait for it in the background."""
        running = self._start(attempt)
        self._active[key] = running
        # Waited for before ``on_start`` runs: if recording the start fails (the database is
        # down), the outcome still arrives, and the scheduler records both later.
        thread = threading.Thread(target=self._wait, args=(key, running), daemon=True)
        thread.start()
        self._threads.append(thread)
        on_start(running)
        return running

    def _start(self, attempt: Attempt) -> Running:
        """A warm start in a spare when there is one for the attempt (it is in its cgroup
        already), else a cold start, in a new cgroup where the node has them."""
        if self.spares is not None and warm_start_possible(attempt):
            spare = self.spares.take(SpareKind.of(attempt))
            if spare is not None:
                gid = supervisor.reader_gid(attempt)
                running = start_warm(attempt, spare, reader_gid=gid)
                if running is not None:
                    return running
        cgroup = self.cgroup_for(attempt)
        try:
            return supervisor.start(attempt, cgroup=cgroup, layers=layers_for(attempt.sandbox))
        except BaseException:
            if cgroup is not None:
                cgroup.remove()
            raise

    def cgroup_for(self, attempt: Attempt) -> AttemptCgroup | None:
        """A new cgroup with the attempt's limits, or None without cgroups. Raises OSError:
        a node that has them never starts an attempt outside one (unless its sandbox says no
        cgroup: a tenant's ``cgroup = "off"``)."""
        if self.cgroups is None or not attempt.sandbox.cgroup:
            return None
        return AttemptCgroup.create(self.cgroups, secrets.token_hex(8), attempt.limits)

    def replenish(self) -> None:
        """Start the spares the next launches will want (call when the launches are done),
        while a slot is free."""
        if self.spares is not None:
            self.spares.replenish(start=self.free_slots > 0)

    def close(self) -> None:
        """Stop the idle spares (running attempts are not touched); let go of the cgroup
        parents if nothing is left in them."""
        if self.spares is not None:
            self.spares.close()
        if self.cgroups is not None:
            release(self.cgroups)

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
