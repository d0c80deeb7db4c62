"""The target interpreter of an env: probed by running it, checked for unprivileged use."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envcache.errors import InterpreterError

# Runs in the target with -I -S: stdlib only, no site-packages, no environment variables.
# The marker environment mirrors packaging.markers.default_environment().
_PROBE = r"""
import json, os, platform, sys, sysconfig

def full_version(info):
    version = "%d.%d.%d" % (info.major, info.minor, info.micro)
    if info.releaselevel != "final":
        version += info.releaselevel[0] + str(info.serial)
    return version

print(json.dumps({
    "executable": sys.executable,
    "version_info": list(sys.version_info),
    "implementation": sys.implementation.name,
    "cache_tag": sys.implementation.cache_tag,
    "platform": sysconfig.get_platform(),
    "machine": platform.machine(),
    "abiflags": getattr(sys, "abiflags", ""),
    "prefix": sys.prefix,
    "stdlib": sysconfig.get_paths()["stdlib"],
    "marker_env": {
        "implementation_name": sys.implementation.name,
        "implementation_version": full_version(sys.implementation.version),
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    },
}))
"""
_PROBE_TIMEOUT = 60.0


@dataclass(frozen=True)
class Interpreter:
    """What an env depends on about its Python: path, exact version, ABI, platform, markers."""

    path: str
    """Resolved real path of the executable (symlinks followed)."""
    version_info: tuple[int, int, int, str, int]
    implementation: str
    cache_tag: str
    platform: str
    machine: str
    abiflags: str
    prefix: str
    stdlib: str
    marker_env: dict[str, str] = field(hash=False)
    """PEP 508 marker environment of the target, for evaluating lockfile markers."""

    @classmethod
    def probe(cls, path: str | os.PathLike[str]) -> Interpreter:
        """Run the interpreter at the absolute ``path`` and record what it reports."""
        given = os.fspath(path)
        if not os.path.isabs(given):
            raise InterpreterError(
                f"interpreter path {given!r} must be absolute, e.g. /usr/bin/python3.11"
            )
        real = os.path.realpath(given)
        if not os.path.isfile(real) or not os.access(real, os.X_OK):
            raise InterpreterError(f"interpreter {given} is not an executable file")
        try:
            done = subprocess.run(
                [real, "-I", "-S", "-c", _PROBE],
                capture_output=True,
                text=True,
                env={"PATH": os.defpath, "LC_ALL": "C.UTF-8"},
                timeout=_PROBE_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InterpreterError(f"cannot run interpreter {real}: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise InterpreterError(
                f"interpreter {real} failed to report itself (exit {done.returncode}): {tail}; "
                "is it a CPython 3 interpreter?"
            )
        try:
            data: dict[str, Any] = json.loads(done.stdout)
            major, minor, micro, level, serial = data["version_info"]
            # A wrapper (a pyenv shim, a script) may have exec'ed the real interpreter.
            executable = os.path.realpath(str(data["executable"] or real))
            return cls(
                path=executable,
                version_info=(int(major), int(minor), int(micro), str(level), int(serial)),
                implementation=str(data["implementation"]),
                cache_tag=str(data["cache_tag"]),
                platform=str(data["platform"]),
                machine=str(data["machine"]),
                abiflags=str(data["abiflags"]),
                prefix=str(data["prefix"]),
                stdlib=str(data["stdlib"]),
                marker_env={str(k): str(v) for k, v in data["marker_env"].items()},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InterpreterError(f"interpreter {real} gave an unreadable report: {exc}") from exc

    @property
    def version(self) -> str:
        """The exact version, e.g. ``3.11.2`` or ``3.13.0rc1``."""
        major, minor, micro, level, serial = self.version_info
        text = f"{major}.{minor}.{micro}"
        return text if level == "final" else f"{text}{level[0]}{serial}"

    def identity(self) -> dict[str, Any]:
        """The JSON-able identity that goes into env keys.

        The marker environment is left out: it holds the kernel release, and its effect on an
        env is already captured by the lock's canonical form.
        """
        return {
            "path": self.path,
            "version_info": list(self.version_info),
            "implementation": self.implementation,
            "cache_tag": self.cache_tag,
            "platform": self.platform,
            "machine": self.machine,
            "abiflags": self.abiflags,
        }

    def check_accessible(self) -> None:
        """Refuse, with InterpreterError, an interpreter unprivileged users could not run.

        Every directory leading to the executable and to its standard library must be
        world-searchable, the executable world-readable and executable, and the standard
        library directory world-readable.
        """
        problems = _world_access_problems(Path(self.path), stat.S_IROTH | stat.S_IXOTH)
        problems += _world_access_problems(Path(self.stdlib), stat.S_IROTH | stat.S_IXOTH)
        if problems:
            major, minor = self.version_info[:2]
            raise InterpreterError(
                f"interpreter {self.path} cannot be used by the unprivileged users tasks run as: "
                f"{problems[0]}; use a system interpreter such as /usr/bin/python{major}.{minor}"
            )


def _world_access_problems(target: Path, needed: int) -> list[str]:
    """What stops "others" from reaching ``target`` with the ``needed`` permission bits."""
    problems = []
    for directory in reversed(target.parents):
        try:
            mode = directory.stat().st_mode
        except OSError as exc:
            problems.append(f"cannot stat {directory}: {exc.strerror}")
            continue
        if not mode & stat.S_IXOTH:
            problems.append(f"{directory} is mode {stat.S_IMODE(mode):04o} (not world-searchable)")
    try:
        mode = target.stat().st_mode
    except OSError as exc:
        return [*problems, f"cannot stat {target}: {exc.strerror}"]
    if mode & needed != needed:
        problems.append(f"{target} is mode {stat.S_IMODE(mode):04o} (needs o+rx)")
    return problems
