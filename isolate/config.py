"""Where isolate keeps its state, and the settings read from the home's TOML file and environment.

Precedence, highest first: command-line ``--home``; environment variables (``ISOLATE_HOME``,
``ISOLATE_DATABASE_URL``, ``ISOLATE_MAX_SPEC_BYTES``, ...); ``<home>/isolate.toml``; defaults.
"""

from __future__ import annotations

import os
import pwd
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from isolate.errors import ConfigError, UsageError
from isolate.units import parse_size

CONFIG_NAME = "isolate.toml"
DEFAULT_ROOT_HOME = Path("/var/lib/isolate")

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class Settings:
    """Tunable settings; each has an ``ISOLATE_<NAME>`` environment variable and a TOML key."""

    database_url: str | None = None
    max_spec_bytes: int = 4 * MIB
    max_bundle_bytes: int = 32 * MIB
    # Most files a bundle may hold: each costs the loader, the store and every extraction.
    max_bundle_files: int = 30_000
    # A try's log: the task's output past this many bytes is dropped, with a marker.
    max_log_bytes: int = 100 * MIB
    paused_at_creation: bool = False
    # A catchup DAG runs at most this many of its due intervals, the newest; a push that
    # makes more due says so.
    max_catchup_runs: int = 1000
    # The interpreter every env is built on. It must be executable by the users tasks run
    # as: Debian's python3, not one under root's 0700 home.
    env_python: str = "/usr/bin/python3"
    env_builder: str = "uv"
    # Where packages come from besides the index: local wheelhouses (a list in TOML, or
    # directories separated by ':' in ISOLATE_FIND_LINKS), and whether to use the network.
    find_links: tuple[str, ...] = ()
    offline: bool = False
    allow_direct_references: bool = False
    build_on_push: bool = True
    gc_keep_versions: int = 3
    # The admin-only tenant mapping (isolate.tenancy); None means /etc/isolate/tenants.toml.
    # An absolute path, refused unless it and every directory above it are root-owned and
    # not writable by group or others.
    tenants_file: str | None = None
    # run_as users below this uid (system accounts) are refused; root always is.
    tenant_min_uid: int = 1000
    # A scheduler running as root with no tenant mapping starts no task (it would run as
    # root). Only for a throwaway single-user node (a tour, a test) may this say otherwise.
    allow_root_tasks: bool = False
    # Start each kind of python task's next process ahead of need, so a launch skips the
    # interpreter's start (localexec/spares.py); at most one idle process per kind.
    warm_starts: bool = True
    # Hardening of task processes (localexec/sandbox.py), each "auto" (used where the host
    # has it), "required" (no task starts without it) or "off"; true means auto, false off.
    # A tenant's [tenant.hardening] table overrides them for its tasks.
    # A cgroup per attempt (cgroup v2 with cgroup.kill, a root scheduler): caps and kills
    # every process of an attempt.
    cgroups: str = "auto"
    # Landlock: the filesystem limited to system paths, the env, bundles and work dirs; no
    # TCP connect to the database's port; no signals out of the attempt.
    landlock: str = "auto"
    # bubblewrap: own pid, ipc, network and mount namespaces; private /tmp.
    bubblewrap: str = "auto"
    # Whether a bubblewrapped task keeps the host's network (else only its own loopback).
    sandbox_network: bool = False


_SIZE_KEYS = {"max_spec_bytes", "max_bundle_bytes", "max_log_bytes"}
_BOOL_KEYS = {
    "paused_at_creation",
    "offline",
    "allow_direct_references",
    "build_on_push",
    "allow_root_tasks",
    "warm_starts",
    "sandbox_network",
}
# Hardening modes (localexec/sandbox.py).
HARDENING_MODES = ("auto", "required", "off")
_MODE_KEYS = {"cgroups", "landlock", "bubblewrap"}
_LIST_KEYS = {"find_links"}
_INT_KEYS = {"gc_keep_versions", "tenant_min_uid", "max_catchup_runs", "max_bundle_files"}
_CHOICES = {"env_builder": ("uv", "virtualenv-pip")}


@dataclass(frozen=True)
class Config:
    """A resolved configuration: a home directory and its settings."""

    home: Path
    settings: Settings

    @property
    def config_file(self) -> Path:
        return self.home / CONFIG_NAME

    @property
    def database_url(self) -> str:
        if self.settings.database_url:
            return self.settings.database_url
        return f"sqlite:///{self.home / 'isolate.db'}"

    @property
    def is_default_sqlite(self) -> bool:
        return not self.settings.database_url

    @property
    def envcache_dir(self) -> Path:
        return self.home / "envcache"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def tmp_dir(self) -> Path:
        return self.home / "tmp"


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$ISOLATE_HOME``, else ``/var/lib/isolate`` for root, else ``$XDG_DATA_HOME/isolate``."""
    env = os.environ if environ is None else environ
    if env.get("ISOLATE_HOME"):
        return Path(env["ISOLATE_HOME"])
    if os.geteuid() == 0:
        return DEFAULT_ROOT_HOME
    data = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "isolate"


def load_config(home: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Resolve the home and read its settings. A missing config file means defaults."""
    env = os.environ if environ is None else environ
    home_path = Path(home) if home else default_home(env)
    home_path = Path(os.path.abspath(home_path))
    settings = Settings()
    config_file = home_path / CONFIG_NAME
    if config_file.is_file():
        settings = _apply(settings, _read_toml(config_file), source=str(config_file))
    overrides = {
        f.name: env[f"ISOLATE_{f.name.upper()}"]
        for f in fields(Settings)
        if env.get(f"ISOLATE_{f.name.upper()}")
    }
    settings = _apply(settings, overrides, source="environment")
    return Config(home=home_path, settings=settings)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _apply(settings: Settings, values: Mapping[str, Any], source: str) -> Settings:
    known = {f.name for f in fields(Settings)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(
                f"{source}: unknown setting {key!r} (known: {', '.join(sorted(known))})"
            )
        try:
            changes[key] = _coerce(key, value)
        except UsageError as exc:
            raise ConfigError(f"{source}: {key}: {exc}") from None
    return replace(settings, **changes)


def _coerce(key: str, value: Any) -> Any:
    if key in _SIZE_KEYS:
        size = parse_size(value)
        if size <= 0:
            raise UsageError("must be positive")
        return size
    if key in _MODE_KEYS:
        return hardening_mode(value)
    if key in _BOOL_KEYS:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        }:
            return value.lower() in {"1", "true", "yes", "on"}
        raise UsageError(f"expected true or false, got {value!r}")
    if key in _LIST_KEYS:
        items = value.split(os.pathsep) if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise UsageError("expected a list of strings")
        return tuple(item for item in items if item)
    if key in _INT_KEYS:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise UsageError(f"expected an integer, got {value!r}") from None
        if isinstance(value, bool) or number < 1:
            raise UsageError(f"expected a positive integer, got {value!r}")
        return number
    if not isinstance(value, str):
        raise UsageError(f"expected a string, got {type(value).__name__}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise UsageError(f"expected one of {', '.join(_CHOICES[key])}, got {value!r}")
    return value


def hardening_mode(value: object) -> str:
    """A hardening mode from a setting: one of :data:`HARDENING_MODES`, or a boolean
    (true: auto, false: off)."""
    if isinstance(value, bool):
        return "auto" if value else "off"
    if isinstance(value, str):
        word = value.lower()
        if word in HARDENING_MODES:
            return word
        if word in {"1", "true", "yes", "on"}:
            return "auto"
        if word in {"0", "false", "no"}:
            return "off"
    raise UsageError(f"expected one of {', '.join(HARDENING_MODES)}, got {value!r}")


def current_user() -> str:
    """The effective OS user's name (its uid if it has no name)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def is_admin(config: Config) -> bool:
    """Root, or the owner of the home: the users who may write the store directly."""
    if os.geteuid() == 0:
        return True
    try:
        return os.stat(config.home).st_uid == os.geteuid()
    except OSError:
        return False


def root_tasks_allowed(config: Config, environ: Mapping[str, str] | None = None) -> bool:
    """Whether a root scheduler may run tasks as root for lack of a mapping: the
    ``allow_root_tasks`` setting, when it comes from root's own environment, or from an
    ``isolate.toml`` that root owns and nobody else can write. A home's owner who is not
    root could otherwise make a root scheduler run their DAGs as root."""
    if not config.settings.allow_root_tasks:
        return False
    env = os.environ if environ is None else environ
    if env.get("ISOLATE_ALLOW_ROOT_TASKS"):
        return True  # the setting is true: the environment, which root set, said so
    try:
        info = os.stat(config.config_file)
    except OSError:
        return False
    return info.st_uid == 0 and not info.st_mode & 0o022


def author_config(home: str | Path | None = None) -> Config:
    """The configuration as an author sees it: the home's file is the admin's and may be
    unreadable (0600); the defaults and the environment still say where the socket is."""
    try:
        return load_config(home)
    except ConfigError:
        path = Path(os.path.abspath(Path(home) if home else default_home()))
        fallback = Config(home=path, settings=Settings())
        if is_admin(fallback):
            raise  # the admin's own configuration is broken: say so
        return fallback
