"""A cgroup per attempt: its processes, wherever they go, are counted, capped and killed.

A process group is not a container: a task that calls ``setsid`` (a double-forked daemon)
leaves it, and ``RLIMIT_NPROC`` counts every process of the user, not of the attempt. A
cgroup holds every descendant whatever it does (joining another cgroup needs write access
to cgroup files, which are root's). Per attempt, under a parent named after the home:

- the cgroup v2 hierarchy (``/sys/fs/cgroup``, or ``/sys/fs/cgroup/unified`` on a hybrid
  host) holds the attempt, and its ``cgroup.kill`` (Linux 5.14) kills all of it at once;
- ``pids.max`` caps its processes (``limits.processes``) and ``memory.max`` its memory
  (``limits.memory``): in the v2 hierarchy where those controllers are enabled there, else
  in the cgroup v1 ``pids`` and ``memory`` hierarchies a hybrid host mounts.

The cold path's child joins before it drops its privileges (``join``); so does a spare
(localexec/spares.py), in a cgroup made for the one attempt it will serve. When the
attempt's main process has ended (or its time is up), everything left in its cgroup is
killed and the cgroup removed.

Detected at start (:func:`detect`) and reported by ``isolate doctor``
(isolate/services/hostcaps.py); only root can use them. Without them an attempt is what it
was before: a process group and rlimits.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from isolate.model import Limits
from isolate.services.hostcaps import CGROUP_ROOT, unified_hierarchy

_KILL_WAIT = 5.0
_FIRST_PAUSE = 0.0005
_MAX_PAUSE = 0.02
# Executors of this process using each node's parents: the last to close removes them (a
# bench or test may run several schedulers on one home at once).
_users: dict[Path, int] = {}


@dataclass(frozen=True)
class Hierarchies:
    """Where this node's attempt cgroups go (the parent dirs, created by :func:`detect`)."""

    unified: Path
    """The parent in the cgroup v2 hierarchy: membership and ``cgroup.kill``."""
    pids: Path | None = None
    """The parent where ``pids.max`` applies (v2, or the v1 ``pids`` hierarchy)."""
    memory: Path | None = None
    """The parent where memory is capped (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``)."""

    def parents(self) -> list[Path]:
        """Each parent once (v2 may serve as pids and memory parent too), v1 ones first."""
        return list(dict.fromkeys(p for p in (self.pids, self.memory, self.unified) if p))

    def describe(self) -> str:
        parts = [f"attempts in {self.unified}"]
        parts.append(f"pids.max in {self.pids}" if self.pids else "no pids controller")
        parts.append(f"memory limit in {self.memory}" if self.memory else "no memory controller")
        return "; ".join(parts)


def detect(home: Path, root: Path = CGROUP_ROOT) -> tuple[Hierarchies | None, str]:
    """The hierarchies usable for attempts of the node at ``home`` and a one-line finding;
    None (and why) if there are none: not root, no writable cgroup v2 with ``cgroup.kill``."""
    if os.geteuid() != 0:
        return None, "needs root"
    name = "isolate-" + hashlib.sha256(os.fsencode(home.resolve())).hexdigest()[:12]
    unified = unified_hierarchy(root)
    if unified is None:
        return None, f"no cgroup v2 hierarchy under {root}"
    try:
        parent = _make(unified / name)
    except OSError as exc:
        return None, f"cannot create {unified / name}: {exc.strerror}"
    if not (parent / "cgroup.kill").exists():
        with contextlib.suppress(OSError):
            parent.rmdir()
        return None, "cgroup v2 without cgroup.kill (Linux 5.14 or later is needed)"
    pids = _controller(unified, parent, "pids", root / "pids", name)
    memory = _controller(unified, parent, "memory", root / "memory", name)
    found = Hierarchies(parent, pids, memory)
    _users[found.unified] = _users.get(found.unified, 0) + 1
    return found, found.describe()


def _make(path: Path) -> Path:
    path.mkdir(mode=0o755, exist_ok=True)
    return path


def _controller(unified: Path, parent: Path, name: str, v1_root: Path, leaf: str) -> Path | None:
    """The parent where controller ``name`` applies: v2 if it can be enabled for our
    children there, else its v1 hierarchy if mounted, else None."""
    try:
        available = (unified / "cgroup.controllers").read_text().split()
        if name in available:
            for directory in (unified, parent):
                enabled = (directory / "cgroup.subtree_control").read_text().split()
                if name not in enabled:
                    (directory / "cgroup.subtree_control").write_text(f"+{name}")
            return parent
    except OSError:
        pass  # e.g. the no-internal-processes rule at the root of a delegated subtree
    if (v1_root / "cgroup.procs").is_file() and not (v1_root / "cgroup.controllers").exists():
        try:
            return _make(v1_root / leaf)
        except OSError:
            return None
    return None


@dataclass
class AttemptCgroup:
    """One attempt's cgroups (one per hierarchy used), made before its process starts."""

    dirs: list[Path] = field(default_factory=list)

    @classmethod
    def create(cls, where: Hierarchies, name: str, limits: Limits) -> AttemptCgroup:
        made = cls()
        try:
            for parent in where.parents():
                path = parent / name
                path.mkdir(mode=0o755)
                made.dirs.append(path)
            if limits.processes is not None and where.pids is not None:
                (where.pids / name / "pids.max").write_text(str(limits.processes))
            if limits.memory is not None and where.memory is not None:
                target = where.memory / name
                knob = "memory.max" if (target / "memory.max").exists() else None
                knob = knob or "memory.limit_in_bytes"
                (target / knob).write_text(str(limits.memory))
        except BaseException:
            made.remove()
            raise
        return made

    def join(self) -> None:
        """Move the calling process in (the cold path's child, still root)."""
        self.add(0)

    def add(self, pid: int) -> None:
        """Move process ``pid`` in (0: the caller)."""
        for path in self.dirs:
            (path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.dirs:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (path / "cgroup.procs").read_text().split())
        return found

    def kill(self) -> None:
        """Kill every process in the cgroup (the escaped ones too) and wait for them to go."""
        for path in self.dirs:
            if (path / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    (path / "cgroup.kill").write_text("1")
        deadline = time.monotonic() + _KILL_WAIT
        pause = _FIRST_PAUSE
        while (left := self.pids()) and time.monotonic() < deadline:
            for pid in left:  # a v1-only member, or one forked while the kill went on
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(pause)
            pause = min(pause * 2, _MAX_PAUSE)

    def remove(self) -> None:
        """Kill what is left, then remove the cgroups (an emptied cgroup goes at once)."""
        self.kill()
        for path in self.dirs:
            deadline = time.monotonic() + _KILL_WAIT
            pause = _FIRST_PAUSE
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        break  # a zombie not yet reaped by its parent; swept at next start
                    # Killed processes leave within a millisecond or two: poll fast first.
                    time.sleep(pause)
                    pause = min(pause * 2, _MAX_PAUSE)
        self.dirs = []


def reap_leftovers(where: Hierarchies) -> int:
    """At a scheduler's start: kill what a previous scheduler of this node left running in
    its attempts' cgroups, and remove them; returns how many cgroups held processes.

    A stopped or killed scheduler's attempts are settled by the next one as ended by the
    restart (``Scheduler.recover``), which kills only the process group of a main process
    still alive: a child that left the group (``setsid``), or any child of a main process
    that has exited, would run on unseen. Nothing is done while another executor of this
    process uses the parents (one scheduler per home is the CLI's rule; a benchmark or a
    test may run several)."""
    if _users.get(where.unified, 0) > 1:
        return 0
    names: set[str] = set()
    for parent in where.parents():
        with contextlib.suppress(FileNotFoundError):
            names.update(child.name for child in parent.iterdir() if child.is_dir())
    busy = 0
    for name in sorted(names):
        leftover = AttemptCgroup(
            dirs=[parent / name for parent in where.parents() if (parent / name).is_dir()]
        )
        if leftover.pids():
            busy += 1
        leftover.remove()
    return busy


def sweep(where: Hierarchies) -> int:
    """Remove the empty attempt cgroups a killed scheduler left; returns how many."""
    removed = 0
    for parent in where.parents():
        try:
            children = list(parent.iterdir())
        except FileNotFoundError:
            continue
        for child in children:
            if child.is_dir():
                try:
                    child.rmdir()
                    removed += 1
                except OSError:
                    pass  # not empty: an attempt the new scheduler re-adopts or kills
    return removed


def release(where: Hierarchies) -> None:
    """At the scheduler's end: remove the parents if no attempt cgroup is left in them and
    no other executor of this process uses them."""
    sweep(where)
    left = _users.get(where.unified, 1) - 1
    if left > 0:
        _users[where.unified] = left
        return
    _users.pop(where.unified, None)
    for parent in where.parents():
        with contextlib.suppress(OSError):
            parent.rmdir()
