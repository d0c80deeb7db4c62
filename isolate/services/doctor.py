"""``isolate doctor``: what an admin should know about a node, checked without changing it.

Each check gives ``ok``, ``warn`` (works, but weaker than it could be) or ``fail`` (unsafe or
broken), with one line of detail. Checks only read: the home's permissions, the database
and its journal files, the env cache, the tenant mapping, the env interpreter's
accessibility, the hardening of task processes (a cgroup per attempt, Landlock,
bubblewrap: localexec/sandbox.py): what the host offers, probed as the scheduler probes it,
against the mode the node's settings and the tenants' ``hardening`` tables ask for (a
mechanism that is ``required`` but missing fails: those tasks would not start), and the
scheduler's heartbeat (:mod:`isolate.health`): running, stuck, dead or stopped.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from envcache.errors import EnvCacheError
from envcache.interpreter import Interpreter
from isolate.config import Config
from isolate.errors import ConfigError
from isolate.health import assess, read_health
from isolate.services.hostcaps import bubblewrap, describe_landlock, landlock_abi, probe
from isolate.tenancy import load_tenants, tenants_path, validate_file


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # "ok" | "warn" | "fail"
    detail: str


def diagnose(config: Config) -> list[Finding]:
    findings = [_home(config)]
    findings += _private_files(config)
    findings += _envcache(config)
    findings.append(_mapping(config))
    findings.append(_interpreter(config))
    findings += _hardening(config)
    findings.append(_scheduler(config))
    return findings


def _scheduler(config: Config) -> Finding:
    """The running scheduler's heartbeat: alive, stuck, dead, or never started."""
    status, detail = assess(read_health(config), now=time.time())
    return Finding("scheduler", status, detail)


def _mode(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _home(config: Config) -> Finding:
    info = _mode(config.home)
    if info is None:
        return Finding("home", "fail", f"{config.home} does not exist: run `isolate init`")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return Finding("home", "fail", f"{config.home} is writable by group or others")
    if os.geteuid() == 0 and info.st_uid != 0:
        return Finding("home", "warn", f"{config.home} is not owned by root (uid {info.st_uid})")
    return Finding("home", "ok", f"{config.home} mode {stat.S_IMODE(info.st_mode):04o}")


def _private_files(config: Config) -> list[Finding]:
    """The config file and the SQLite database with its journals: the owner's alone."""
    paths = [config.config_file]
    if config.is_default_sqlite:
        database = config.home / "isolate.db"
        paths += [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
    findings = []
    for path in paths:
        info = _mode(path)
        if info is None:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            findings.append(
                Finding(f"private:{path.name}", "fail", f"{path} is mode {mode:04o}, not 0600")
            )
        else:
            findings.append(Finding(f"private:{path.name}", "ok", f"{path} mode {mode:04o}"))
    return findings


def _envcache(config: Config) -> list[Finding]:
    root = config.envcache_dir
    findings = []
    for name in ("", "envs", "uv-cache", "objects", "locks"):
        path = root / name if name else root
        info = _mode(path)
        if info is None:
            continue
        label = f"envcache:{name or '.'}"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            findings.append(Finding(label, "fail", f"{path} is writable by group or others"))
        elif name in ("uv-cache", "locks") and info.st_mode & 0o077:
            findings.append(Finding(label, "fail", f"{path} should be private (0700)"))
        else:
            findings.append(Finding(label, "ok", f"{path} mode {stat.S_IMODE(info.st_mode):04o}"))
    return findings


def _mapping(config: Config) -> Finding:
    path = tenants_path(config)
    if not path.exists():
        return Finding(
            "tenants", "warn", f"no mapping at {path}: single-user node (root starts no task)"
        )
    problems = validate_file(path, min_uid=config.settings.tenant_min_uid)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return Finding("tenants", "fail", problems[0] + more)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o004:
        return Finding(
            "tenants",
            "warn",
            f"{path} is valid but readable by every user, task users included (mode "
            f"{mode:04o}): chmod 0600, or 0640 with a group of admins",
        )
    return Finding("tenants", "ok", f"{path} is valid; only an admin can read or change it")


def _interpreter(config: Config) -> Finding:
    # Root's tasks run as other users, who must be able to run the envs' interpreter; a
    # plain user's run as that user (the env cache checks the same, see EnvCache.shared).
    shared = os.geteuid() == 0
    try:
        interpreter = Interpreter.probe(config.settings.env_python)
        if shared:
            interpreter.check_accessible()
    except EnvCacheError as exc:
        return Finding("interpreter", "fail", str(exc))
    who = "task users" if shared else "you (the tasks of your scheduler run as you)"
    return Finding(
        "interpreter", "ok", f"{interpreter.path} {interpreter.version}, usable by {who}"
    )


def _hardening(config: Config) -> list[Finding]:
    """Each hardening mechanism: ``ok`` where the host has it, ``warn`` where not, ``fail``
    where the node or a tenant requires it and the host lacks it."""
    settings = config.settings
    required = _required_by_tenants(config)
    usable, cgroups = probe()
    abi = landlock_abi()
    bwrap, bwrap_finding = bubblewrap()
    return [
        _mechanism(
            "cgroup v2",
            settings.cgroups,
            required["cgroup"],
            available=usable,
            finding=f"a cgroup per attempt: {cgroups}" if usable else cgroups,
        ),
        _mechanism(
            "landlock",
            settings.landlock,
            required["landlock"],
            available=abi > 0,
            finding=describe_landlock(abi),
        ),
        _mechanism(
            "bubblewrap",
            settings.bubblewrap,
            required["bubblewrap"],
            available=bwrap is not None,
            finding=bwrap_finding,
        ),
    ]


def _mechanism(
    check: str, mode: str, tenants: list[str], *, available: bool, finding: str
) -> Finding:
    """One mechanism's finding, from the node's ``mode``, the ``tenants`` whose hardening
    table requires it, and what the host offers."""
    if not available and (mode == "required" or tenants):
        who = ["the node's settings"] if mode == "required" else []
        who += [f"tenant {name}" for name in tenants]
        return Finding(
            check,
            "fail",
            f"required by {', '.join(who)}, but not available: {finding}; those tasks do not start",
        )
    status = "ok" if available else "warn"
    if mode == "off":
        also = f" (required by tenant {', '.join(tenants)})" if tenants else ""
        return Finding(check, status, f"off in the settings{also}; the host: {finding}")
    if not available:
        return Finding(check, status, f"not used: {finding}")
    return Finding(check, status, f"used ({mode}): {finding}")


def _required_by_tenants(config: Config) -> dict[str, list[str]]:
    """The tenants whose hardening table requires each mechanism. An invalid or unsafe
    mapping counts for nothing here: the ``tenants`` check reports it."""
    required: dict[str, list[str]] = {"cgroup": [], "landlock": [], "bubblewrap": []}
    try:
        if not tenants_path(config).exists():
            return required
        tenants = load_tenants(config).tenants
    except ConfigError:
        return required
    for tenant in tenants:
        for mechanism, names in required.items():
            if getattr(tenant.hardening, mechanism) == "required":
                names.append(tenant.name)
    return required
