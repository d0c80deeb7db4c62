"""What isolation the host offers, read without changing anything (``isolate doctor``).

The scheduler's own use of cgroups is in localexec/cgroups.py; this module only looks.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def unified_hierarchy(root: Path = CGROUP_ROOT) -> Path | None:
    """The cgroup v2 hierarchy: ``root`` itself, or ``root/unified`` on a hybrid host."""
    for path in (root, root / "unified"):
        if (path / "cgroup.controllers").is_file():
            return path
    return None


def probe(root: Path = CGROUP_ROOT) -> tuple[bool, str]:
    """Whether attempts would get cgroups here, and what, without creating anything (for
    ``isolate doctor``): root, a v2 hierarchy, Linux 5.14 for ``cgroup.kill``."""
    unified = unified_hierarchy(root)
    if unified is None:
        return False, f"no cgroup v2 hierarchy under {root}"
    release = tuple(int(part) for part in _version(os.uname().release))
    if release < (5, 14):
        return False, f"Linux {os.uname().release}: cgroup.kill needs 5.14"
    if os.geteuid() != 0 or not os.access(unified, os.W_OK):
        return False, f"{unified} is not writable: the scheduler must run as root"
    controllers = (unified / "cgroup.controllers").read_text().split()
    limits = [
        f"{name} ({'v2' if name in controllers else 'v1'})"
        for name in ("pids", "memory")
        if name in controllers or (root / name / "cgroup.procs").is_file()
    ]
    return True, f"{unified}, limits: {', '.join(limits) or 'none'}"


def _version(release: str) -> list[str]:
    numbers = []
    for part in release.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit()) or "0"
        numbers.append(digits)
    return numbers
