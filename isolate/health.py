"""The scheduler's health file, ``<home>/run/scheduler.json``, as the admin reads it.

The running scheduler rewrites it (atomically) every few seconds from its loop and once
more when it stops (:mod:`localexec.health`). It says whether the loop is alive (the time of
its last pass), whether the database answers, what runs, the faults the loop contained (the
last one with its DAG, run and task), and how its push server is doing. ``isolate doctor``
reads it: a heartbeat older than :data:`STALE_AFTER` from a scheduler whose process is alive
is a loop that is stuck, not one that is idle (an idle loop still beats).

The file holds no secret (the database URL is shown without its password): it is 0644, so
monitoring may read it without root.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from isolate.config import Config

HEALTH_FILE = "scheduler.json"
STALE_AFTER = 60.0  # seconds: a heartbeat older than this is a stuck loop


def health_path(config: Config) -> Path:
    return config.run_dir / HEALTH_FILE


def read_health(config: Config) -> dict[str, Any] | None:
    """The last health the scheduler wrote, or None if there is none (or it is unreadable)."""
    try:
        document = json.loads(health_path(config).read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def pid_alive(pid: object) -> bool:
    """Whether process ``pid`` exists (it may belong to another user)."""
    return isinstance(pid, int) and pid > 0 and Path(f"/proc/{pid}").exists()


def assess(health: Mapping[str, Any] | None, *, now: float) -> tuple[str, str]:
    """(status, one line) for ``isolate doctor``, from the file the scheduler last wrote."""
    if health is None:
        return "warn", "no scheduler has run on this home (`isolate scheduler`)"
    pid = health.get("pid")
    if health.get("stopped_at") is not None:
        return "warn", f"no scheduler is running: the last one (pid {pid}) stopped"
    if not pid_alive(pid):
        return "fail", f"the scheduler (pid {pid}) died without stopping: restart it"
    age = now - float(health.get("heartbeat_at", 0))
    if age > STALE_AFTER:
        return "fail", f"the scheduler (pid {pid}) last completed a pass {age:.0f}s ago: stuck"
    parts = [f"pid {pid}, last pass {age:.0f}s ago"]
    problems = []
    if health.get("database") != "ok":
        problems.append(f"database {health.get('database')}")
    push = health.get("push_server")
    if isinstance(push, dict):
        if not push.get("alive"):
            problems.append("its push server is not accepting connections")
        elif push.get("restarts"):
            parts.append(f"push server restarted {push['restarts']} times")
    faults = health.get("contained_faults", 0)
    if faults:
        parts.append(f"{faults} contained faults, last: {health.get('last_fault')}")
    parts.append(f"{health.get('running_attempts', 0)} attempts running")
    if problems:
        return "fail", "; ".join(problems + parts)
    return ("warn" if faults else "ok"), "; ".join(parts)
