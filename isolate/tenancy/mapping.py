"""The tenant mapping as data, and its parsing and validation (pure: text in, map or problems out).

The system's users and groups come in through :class:`UserDatabase`, so every check runs the
same on a real node and in a test; :mod:`isolate.tenancy.files` does the I/O.
"""

from __future__ import annotations

import re
import tomllib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from isolate.config import HARDENING_MODES, hardening_mode
from isolate.errors import ConfigError, UsageError
from isolate.tenancy.patterns import matches_some_dag_id, overlap_witness
from isolate.units import format_size, parse_size

NOBODY_UID = 65534
DEFAULT_MIN_UID = 1000
# Tenant names appear in tables, logs and audit records: keep them to id characters.
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
_TENANT_KEYS = (
    "name",
    "dags",
    "pushers",
    "run_as",
    "weight",
    "max_active_tasks",
    "limits",
    "hardening",
)
DEFAULT_WEIGHT = 1
_MAX_COUNT = 2**31 - 1  # weight and max_active_tasks: far beyond any real node
_LIMIT_KEYS = ("memory", "processes", "open_files", "cpu_time")
_HARDENING_MODES = ("cgroup", "landlock", "bubblewrap")
_HARDENING_KEYS = (*_HARDENING_MODES, "network")


class TenancyError(ConfigError):
    """The tenant mapping is missing, unsafe or invalid (exit code 5, a configuration error).

    ``problems`` holds every located problem ("tenant[analytics].run_as: ..."); the message
    shows the first few so one mistake does not hide the others.
    """

    shown = 5

    def __init__(self, problems: list[str] | str, *, subject: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if not self.problems:
            raise ValueError("TenancyError needs at least one problem")
        self.subject = subject
        head = "; ".join(self.problems[: self.shown])
        more = len(self.problems) - self.shown
        prefix = f"{subject}: " if subject else ""
        super().__init__(prefix + head + (f" (and {more} more)" if more > 0 else ""))


class UserDatabase(ABC):
    """Which OS users and groups exist: the system's (``SystemUsers``) or a test's."""

    @abstractmethod
    def uid_of(self, user: str) -> int | None:
        """The uid of ``user``, or None if there is no such user."""

    @abstractmethod
    def has_group(self, group: str) -> bool:
        """Whether a group of that name exists."""

    @abstractmethod
    def primary_gid_of(self, user: str) -> int | None:
        """The gid of ``user``'s primary group, or None if there is no such user."""

    @abstractmethod
    def gids_of(self, user: str) -> frozenset[int]:
        """Every group a process of ``user`` gets (``getgrouplist``), its primary included."""

    @abstractmethod
    def group_name_of(self, gid: int) -> str | None:
        """The name of group ``gid``, or None if it has none."""


@dataclass(frozen=True)
class TenantLimits:
    """Resource limits for a tenant's tasks; None means the node's default."""

    memory: int | None = None  # bytes
    processes: int | None = None
    open_files: int | None = None
    cpu_time: int | None = None  # seconds

    def to_json(self) -> dict[str, int]:
        return {k: v for k in _LIMIT_KEYS if (v := getattr(self, k)) is not None}

    def describe(self) -> str:
        """A short human form, e.g. ``memory=2.0 GiB processes=256``, or "-"."""
        parts = [f"{k}={format_size(v) if k == 'memory' else v}" for k, v in self.to_json().items()]
        return " ".join(parts) or "-"


@dataclass(frozen=True)
class TenantHardening:
    """A tenant's hardening modes ("auto", "required", "off"; see localexec/sandbox.py) and
    whether its bubblewrapped tasks keep the network; None means the node's setting."""

    cgroup: str | None = None
    landlock: str | None = None
    bubblewrap: str | None = None
    network: bool | None = None

    def to_json(self) -> dict[str, str | bool]:
        return {k: v for k in _HARDENING_KEYS if (v := getattr(self, k)) is not None}

    def describe(self) -> str:
        """A short human form, e.g. ``bubblewrap=required network=true``, or "-"."""
        parts = [f"{k}={str(v).lower()}" for k, v in self.to_json().items()]
        return " ".join(parts) or "-"


@dataclass(frozen=True)
class Tenant:
    """One tenant: the dag_id patterns it owns, who may push them, the OS user they run as."""

    name: str
    dags: tuple[str, ...]
    pushers: tuple[str, ...]  # user names and "@group" names
    run_as: str
    limits: TenantLimits = field(default_factory=TenantLimits)
    hardening: TenantHardening = field(default_factory=TenantHardening)
    # Its share of the node's slots (localexec/fairshare.py): the weight against other
    # tenants', and a cap on its tasks running at once (None: the node's parallelism only).
    weight: int = DEFAULT_WEIGHT
    max_active_tasks: int | None = None

    def owns(self, dag_id: str) -> bool:
        return any(fnmatchcase(dag_id, pattern) for pattern in self.dags)

    @property
    def pusher_users(self) -> frozenset[str]:
        return frozenset(p for p in self.pushers if not p.startswith("@"))

    @property
    def pusher_groups(self) -> frozenset[str]:
        return frozenset(p[1:] for p in self.pushers if p.startswith("@"))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dags": list(self.dags),
            "pushers": list(self.pushers),
            "run_as": self.run_as,
            "weight": self.weight,
            "max_active_tasks": self.max_active_tasks,  # null: the node's parallelism
            # Every key, null where unset (the node's default), as elsewhere in --json output.
            "limits": {k: getattr(self.limits, k) for k in _LIMIT_KEYS},
            "hardening": {k: getattr(self.hardening, k) for k in _HARDENING_KEYS},
        }


@dataclass(frozen=True)
class TenantMap:
    """The validated mapping. No two tenants' patterns overlap, so a dag_id has one owner."""

    tenants: tuple[Tenant, ...] = ()
    source: str = ""

    def owner(self, dag_id: str) -> Tenant | None:
        """The tenant owning ``dag_id``, or None: a DAG no tenant owns must not run."""
        return next((t for t in self.tenants if t.owns(dag_id)), None)

    def run_as(self, dag_id: str) -> str | None:
        """The OS user ``dag_id``'s tasks run as, or None if no tenant owns it."""
        tenant = self.owner(dag_id)
        return tenant.run_as if tenant else None

    def may_push(self, user: str, groups: frozenset[str] | set[str], dag_id: str) -> bool:
        """Whether ``user`` (member of ``groups``, see ``user_groups``) may push ``dag_id``."""
        tenant = self.owner(dag_id)
        if tenant is None:
            return False
        return user in tenant.pusher_users or bool(tenant.pusher_groups & set(groups))


def parse_tenants(
    text: str, users: UserDatabase, *, min_uid: int = DEFAULT_MIN_UID, source: str = ""
) -> TenantMap:
    """The mapping in ``text``; raises :class:`TenancyError` with every problem found."""
    tenants, problems = check_mapping(text, users, min_uid=min_uid)
    if problems:
        raise TenancyError(problems, subject=source or None)
    return TenantMap(tenants, source)


def check_mapping(
    text: str, users: UserDatabase, *, min_uid: int = DEFAULT_MIN_UID
) -> tuple[tuple[Tenant, ...], list[str]]:
    """Every problem of the mapping in ``text`` (empty if valid) and the tenants it parsed."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return (), [f"not valid TOML: {exc}"]
    problems = [
        f"unknown key {key!r}: the file holds only [[tenant]] tables"
        for key in data
        if key != "tenant"
    ]
    raw = data.get("tenant", [])
    if not isinstance(raw, list):
        problems.append("tenant: expected [[tenant]] tables (an array), got a single table")
        raw = []
    parsed = [_tenant(i, item, users, min_uid, problems) for i, item in enumerate(raw)]
    tenants = [t for t in parsed if t is not None]
    problems += _duplicate_names(tenants)
    problems += _shared_run_as(tenants)
    problems += _shared_groups(tenants, users)
    problems += _overlaps(tenants)
    return tuple(tenants), problems


def _tenant(
    index: int, raw: object, users: UserDatabase, min_uid: int, problems: list[str]
) -> Tenant | None:
    where = f"tenant[#{index + 1}]"
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a table, got {_type(raw)}")
        return None
    name = raw.get("name")
    if isinstance(name, str) and _NAME.match(name):
        where = f"tenant[{name}]"
    elif name is None:
        problems.append(f"{where}.name: missing")
    else:
        problems.append(f"{where}.name: expected 1-64 characters of A-Z a-z 0-9 _ . -")
    problems += [
        f"{where}: unknown key {key!r} (known: {', '.join(_TENANT_KEYS)})"
        for key in raw
        if key not in _TENANT_KEYS
    ]
    dags = _strings(raw, "dags", where, problems)
    for k, pattern in enumerate(dags):
        if not matches_some_dag_id(pattern):
            problems.append(
                f"{where}.dags[{k}]: {pattern!r} matches no dag_id "
                "(dag ids are made of A-Z a-z 0-9 _ . -)"
            )
    pushers = _strings(raw, "pushers", where, problems)
    for k, pusher in enumerate(pushers):
        if pusher.startswith("@"):
            if not users.has_group(pusher[1:]):
                problems.append(f"{where}.pushers[{k}]: unknown group {pusher[1:]!r}")
        elif users.uid_of(pusher) is None:
            problems.append(f"{where}.pushers[{k}]: unknown user {pusher!r}")
    run_as = _run_as(raw.get("run_as"), where, users, min_uid, problems)
    weight = _positive(raw, "weight", where, problems)
    max_active_tasks = _positive(raw, "max_active_tasks", where, problems)
    limits = _limits(raw.get("limits"), where, problems)
    hardening = _hardening(raw.get("hardening"), where, problems)
    return Tenant(
        name=name if isinstance(name, str) else f"#{index + 1}",
        dags=dags,
        pushers=pushers,
        run_as=run_as,
        limits=limits,
        hardening=hardening,
        weight=DEFAULT_WEIGHT if weight is None else weight,
        max_active_tasks=max_active_tasks,
    )


def _positive(raw: dict[str, Any], key: str, where: str, problems: list[str]) -> int | None:
    """An optional positive integer (None when absent or invalid: the problem is recorded)."""
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_COUNT:
        problems.append(
            f"{where}.{key}: expected a positive integer (at most {_MAX_COUNT}), got {value!r}"
        )
        return None
    return value


def _strings(raw: dict[str, Any], key: str, where: str, problems: list[str]) -> tuple[str, ...]:
    value = raw.get(key)
    if value is None:
        problems.append(f"{where}.{key}: missing")
        return ()
    if not isinstance(value, list):
        problems.append(f"{where}.{key}: expected a list of strings, got {_type(value)}")
        return ()
    if not value:
        problems.append(f"{where}.{key}: empty: list at least one")
    good: list[str] = []
    for k, item in enumerate(value):
        if not isinstance(item, str) or not item.strip("@"):
            problems.append(f"{where}.{key}[{k}]: expected a non-empty string, got {item!r}")
        elif item not in good:
            good.append(item)
    return tuple(good)


def _run_as(
    value: object, where: str, users: UserDatabase, min_uid: int, problems: list[str]
) -> str:
    if value is None:
        problems.append(f"{where}.run_as: missing")
        return ""
    if not isinstance(value, str) or not value:
        problems.append(f"{where}.run_as: expected a user name, got {value!r}")
        return ""
    uid = users.uid_of(value)
    if uid is None:
        problems.append(f"{where}.run_as: unknown user {value!r}")
    elif uid == 0:
        # Checked by uid, not name: "toor" and other uid-0 aliases are root too.
        problems.append(f"{where}.run_as: {value!r} is root (uid 0): tasks never run as root")
    elif uid < min_uid:
        problems.append(
            f"{where}.run_as: {value!r} has uid {uid}, below tenant_min_uid {min_uid}: "
            "system accounts own system files; create a dedicated user"
        )
    elif uid == NOBODY_UID:
        # Many daemons run as nobody: a task running as nobody could signal or trace them.
        problems.append(f"{where}.run_as: {value!r} is nobody (uid 65534): create a dedicated user")
    return value


def _limits(value: object, where: str, problems: list[str]) -> TenantLimits:
    if value is None:
        return TenantLimits()
    if not isinstance(value, dict):
        problems.append(f"{where}.limits: expected a table, got {_type(value)}")
        return TenantLimits()
    found: dict[str, int] = {}
    for key, item in value.items():
        at = f"{where}.limits.{key}"
        if key not in _LIMIT_KEYS:
            problems.append(
                f"{where}.limits: unknown key {key!r} (known: {', '.join(_LIMIT_KEYS)})"
            )
        elif key == "memory":
            try:
                size = parse_size(item)
            except UsageError as exc:
                problems.append(f"{at}: {exc}")
                continue
            if size <= 0:
                problems.append(f"{at}: must be positive")
            else:
                found[key] = size
        elif isinstance(item, bool) or not isinstance(item, int) or item <= 0:
            problems.append(f"{at}: expected a positive integer, got {item!r}")
        else:
            found[key] = item
    return TenantLimits(**found)


def _hardening(value: object, where: str, problems: list[str]) -> TenantHardening:
    if value is None:
        return TenantHardening()
    if not isinstance(value, dict):
        problems.append(f"{where}.hardening: expected a table, got {_type(value)}")
        return TenantHardening()
    found: dict[str, str | bool] = {}
    for key, item in value.items():
        at = f"{where}.hardening.{key}"
        if key not in _HARDENING_KEYS:
            problems.append(
                f"{where}.hardening: unknown key {key!r} (known: {', '.join(_HARDENING_KEYS)})"
            )
        elif key == "network":
            if isinstance(item, bool):
                found[key] = item
            else:
                problems.append(f"{at}: expected true or false, got {item!r}")
        elif isinstance(item, str) and item in HARDENING_MODES:
            found[key] = hardening_mode(item)
        else:
            problems.append(f"{at}: expected one of {', '.join(HARDENING_MODES)}, got {item!r}")
    return TenantHardening(**found)  # type: ignore[arg-type]


def _shared_run_as(tenants: list[Tenant]) -> list[str]:
    """Two tenants running as one OS user could read and signal each other's tasks."""
    first: dict[str, str] = {}
    problems = []
    for tenant in tenants:
        if not tenant.run_as:
            continue
        if tenant.run_as in first:
            problems.append(
                f"tenant[{tenant.name}].run_as: {tenant.run_as!r} is also tenant "
                f"{first[tenant.run_as]}'s user: each tenant needs its own"
            )
        first.setdefault(tenant.run_as, tenant.name)
    return problems


def _shared_groups(tenants: list[Tenant], users: UserDatabase) -> list[str]:
    """Two tenants whose tasks share the group another tenant's files are opened to.

    A tenant's bundles (``bundles/tenants/<name>``, 0750) and logs (0640) belong to root and
    its run-as user's primary group, and a task gets every group of its user. So two run-as
    users with one primary group (useradd's common ``users`` group, say) could read each
    other's code and logs, and so could a user that is a member of another tenant's user's
    primary group. Tenants sharing one user are reported by :func:`_shared_run_as`.
    """
    primary: dict[str, int] = {}
    for tenant in tenants:
        if tenant.run_as and tenant.run_as not in primary:
            gid = users.primary_gid_of(tenant.run_as)
            if gid is not None:  # an unknown user is reported by _run_as
                primary[tenant.run_as] = gid
    owner: dict[int, Tenant] = {}  # gid -> the first tenant whose user has it as primary
    problems = []
    for tenant in tenants:
        gid = primary.get(tenant.run_as)
        if gid is None:
            continue
        first = owner.setdefault(gid, tenant)
        if first.run_as != tenant.run_as:
            problems.append(
                f"tenant[{tenant.name}].run_as: {tenant.run_as!r} and tenant {first.name}'s "
                f"user {first.run_as!r} share the primary group {_group(users, gid)}: a "
                "tenant's bundles and logs are opened to its user's primary group, so each "
                "tenant could read the other's; give each run-as user a group of its own "
                "(usermod -g)"
            )
    for tenant in tenants:
        gid = primary.get(tenant.run_as)
        if gid is None:
            continue
        for other_gid in sorted(users.gids_of(tenant.run_as) - {gid}):
            other = owner.get(other_gid)
            if other is None or other.run_as == tenant.run_as:
                continue
            name = users.group_name_of(other_gid) or str(other_gid)
            problems.append(
                f"tenant[{tenant.name}].run_as: {tenant.run_as!r} is a member of the group "
                f"{_group(users, other_gid)}, the primary group of tenant {other.name}'s user "
                f"{other.run_as!r}: its tasks could read tenant {other.name}'s bundles and "
                f"logs; remove it from the group (gpasswd -d {tenant.run_as} {name})"
            )
    return problems


def _group(users: UserDatabase, gid: int) -> str:
    name = users.group_name_of(gid)
    return f"{name!r} (gid {gid})" if name else f"gid {gid}"


def _duplicate_names(tenants: list[Tenant]) -> list[str]:
    first: dict[str, int] = {}
    problems = []
    for index, tenant in enumerate(tenants):
        if tenant.name in first and not tenant.name.startswith("#"):
            problems.append(
                f"tenant[{tenant.name}]: duplicate name (tenants #{first[tenant.name] + 1} "
                f"and #{index + 1})"
            )
        first.setdefault(tenant.name, index)
    return problems


def _overlaps(tenants: list[Tenant]) -> list[str]:
    """Every pair of patterns of different tenants that some dag_id matches (see patterns.py)."""
    problems = []
    for b_index, b in enumerate(tenants):
        for a in tenants[:b_index]:
            for k, pb in enumerate(b.dags):
                for m, pa in enumerate(a.dags):
                    witness = overlap_witness(pa, pb)
                    if witness is not None:
                        problems.append(
                            f"tenant[{b.name}].dags[{k}]: {pb!r} overlaps tenant[{a.name}]."
                            f"dags[{m}] {pa!r} (both match {witness!r}): "
                            "a dag_id must belong to one tenant"
                        )
    return problems


def _type(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else type(value).__name__
