"""What isolation the host offers, found without changing anything (``isolate doctor``, and
the scheduler at start).

The scheduler's use of these is in localexec (cgroups.py, landlock.py, sandbox.py); this
module only looks.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
NOBODY_UID = 65534
_SYS_LANDLOCK_CREATE_RULESET = 444
_LANDLOCK_CREATE_RULESET_VERSION = 1
_PROBE_TIMEOUT = 10.0
# What bubblewrap must be able to do for a task: every namespace, its own /proc and /dev.
BWRAP_PROBE_ARGS = (
    "--unshare-all",
    "--die-with-parent",
    "--ro-bind",
    "/",
    "/",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--tmpfs",
    "/tmp",  # noqa: S108 - a fresh tmpfs inside the sandbox, not the host's /tmp
)


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


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 without Landlock (before Linux 5.13, or not
    enabled at boot: ``lsm=`` must list it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    version = libc.syscall(
        _SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), _LANDLOCK_CREATE_RULESET_VERSION
    )
    return max(int(version), 0)


def describe_landlock(abi: int) -> str:
    """What a Landlock ABI gives tasks, in one line."""
    if abi == 0:
        return "not available in this kernel (Linux 5.13+ with landlock in its lsm= list)"
    parts = ["filesystem"]
    parts.append("TCP connect" if abi >= 4 else "no TCP rules (ABI 4 is needed)")
    parts.append("signal and abstract-socket scoping" if abi >= 6 else "no scoping (ABI 6)")
    return f"ABI {abi}: " + ", ".join(parts)


def bubblewrap() -> tuple[Path | None, str]:
    """``bwrap``, if it is installed and works for an unprivileged user here (it needs
    unprivileged user namespaces), and a one-line finding. As root, the probe runs as
    nobody: tasks never run as root."""
    found = shutil.which("bwrap")
    if found is None:
        return None, "bwrap not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    path = Path(found)
    nobody = NOBODY_UID if os.geteuid() == 0 else None
    try:
        result = subprocess.run(
            [str(path), *BWRAP_PROBE_ARGS, "--", "/bin/true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_PROBE_TIMEOUT,
            cwd="/",
            env={"PATH": "/usr/bin:/bin"},
            check=False,
            user=nobody,
            group=nobody,
            extra_groups=[] if nobody is not None else None,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{path} cannot run: {exc}"
    if result.returncode != 0:
        why = " ".join(result.stderr.decode(errors="replace").split())[:200]
        return None, f"{path} does not work for unprivileged users here: {why or 'failed'}"
    return path, f"{path} works (user, pid, network, ipc and mount namespaces)"
