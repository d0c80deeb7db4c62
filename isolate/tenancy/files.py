"""Reading the mapping from disk safely, and the system's users and groups (the I/O edge).

The mapping decides which OS user runs whose code, so only root may be able to change it:
like sshd's StrictModes, the file must be root-owned and not writable by group or others, and
so must every directory above it up to ``/`` (whoever can write a directory can replace the
file in it). Two deliberate differences from sshd:

* No symlink anywhere in the path: the file is opened with ``O_NOFOLLOW`` and each ancestor is
  checked with ``lstat``. Name the real path in the tenants_file setting.
* A root-owned directory with the sticky bit (``/tmp``, mode 1777) is accepted although others
  may write it: the sticky bit stops them from renaming or deleting root's entries in it, so
  they cannot replace a root-owned directory under it. (Tests keep candidate files there.)

The file's own ownership and mode are checked on the opened descriptor (``fstat``), so a swap
between the check and the read is impossible; its ancestors cannot be swapped by non-root
users once they pass the check.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

from isolate.config import Config
from isolate.errors import UsageError
from isolate.tenancy.mapping import (
    TenancyError,
    TenantMap,
    UserDatabase,
    check_mapping,
    parse_tenants,
)

DEFAULT_TENANTS_FILE = Path("/etc/isolate/tenants.toml")
_HOW_TO_POINT = "set tenants_file in the home's isolate.toml or ISOLATE_TENANTS_FILE"


class SystemUsers(UserDatabase):
    """The node's users and groups, through the C library (so LDAP/SSSD users count too)."""

    def uid_of(self, user: str) -> int | None:
        try:
            return pwd.getpwnam(user).pw_uid
        except KeyError:
            return None

    def has_group(self, group: str) -> bool:
        try:
            grp.getgrnam(group)
        except KeyError:
            return False
        return True

    def primary_gid_of(self, user: str) -> int | None:
        try:
            return pwd.getpwnam(user).pw_gid
        except KeyError:
            return None

    def gids_of(self, user: str) -> frozenset[int]:
        # The groups the privilege drop gives the user's tasks (localexec/privdrop.py).
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return frozenset()
        return frozenset(os.getgrouplist(user, entry.pw_gid))

    def group_name_of(self, gid: int) -> str | None:
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return None


def user_groups(user: str) -> frozenset[str]:
    """Names of every group ``user`` belongs to, its primary group included."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"unknown user {user!r}") from None
    names = set()
    for gid in os.getgrouplist(user, entry.pw_gid):
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue  # a gid without a name cannot be written as "@group" in the mapping
    return frozenset(names)


def tenants_path(config: Config) -> Path:
    """The live mapping: ``ISOLATE_TENANTS_FILE``, else the home's tenants_file, else /etc."""
    configured = config.settings.tenants_file
    if not configured:
        return DEFAULT_TENANTS_FILE
    if not os.path.isabs(configured):
        raise TenancyError(f"tenants_file {configured!r} must be an absolute path")
    return Path(configured)


def load_tenants(config: Config, users: UserDatabase | None = None) -> TenantMap:
    """The live mapping, read safely and validated; raises :class:`TenancyError`."""
    path = tenants_path(config)
    return parse_tenants(
        read_mapping(path),
        users or SystemUsers(),
        min_uid=config.settings.tenant_min_uid,
        source=str(path),
    )


def validate_file(
    path: Path,
    *,
    min_uid: int,
    check_permissions: bool = True,
    users: UserDatabase | None = None,
) -> list[str]:
    """Every problem of the mapping file at ``path`` (empty if it is fit to be installed)."""
    try:
        text = read_mapping(path, check_permissions=check_permissions)
    except TenancyError as exc:
        return exc.problems
    return check_mapping(text, users or SystemUsers(), min_uid=min_uid)[1]


def read_mapping(path: Path, *, check_permissions: bool = True) -> str:
    """The text of the mapping at ``path``, refused unless only root can change it."""
    path = Path(os.path.abspath(path))
    problems = _ancestor_problems(path) if check_permissions else []
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO must not hang the scheduler
    if check_permissions:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise TenancyError(_missing(path)) from None
    except OSError as exc:
        if check_permissions and path.is_symlink():
            problems.append(f"{path}: is a symlink: name the real file")
            raise TenancyError(problems) from None
        raise TenancyError(f"{path}: cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            problems.append(f"{path}: not a regular file")
        elif check_permissions:
            problems += _unsafe(path, info, "chown root", "chmod go-w")
        if problems:
            raise TenancyError(problems)
        data = fh.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TenancyError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _ancestor_problems(path: Path) -> list[str]:
    problems = []
    for directory in reversed(path.parents):  # from "/" down, so a missing one ends the walk
        try:
            info = os.lstat(directory)
        except FileNotFoundError:
            raise TenancyError(_missing(path)) from None
        except OSError as exc:
            raise TenancyError(f"{directory}: cannot check: {exc.strerror}") from None
        if stat.S_ISLNK(info.st_mode):
            problems.append(f"{directory}: is a symlink: name the real path of the mapping")
        elif not stat.S_ISDIR(info.st_mode):
            problems.append(f"{directory}: not a directory")
        else:
            problems += _unsafe(directory, info, "chown root", "chmod go-w", sticky_ok=True)
    return problems


def _unsafe(
    path: Path, info: os.stat_result, chown: str, chmod: str, *, sticky_ok: bool = False
) -> list[str]:
    problems = []
    if info.st_uid != 0:
        problems.append(f"{path}: owned by {_owner(info.st_uid)}, not root: {chown} {path}")
    writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    sticky = sticky_ok and info.st_uid == 0 and info.st_mode & stat.S_ISVTX
    if writable and not sticky:
        problems.append(
            f"{path}: mode {stat.S_IMODE(info.st_mode):04o} is writable by group or others: "
            f"{chmod} {path}"
        )
    return problems


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _missing(path: Path) -> str:
    return (
        f"tenant mapping {path} does not exist: create it (owned by root, not writable by "
        f"group or others) or {_HOW_TO_POINT}"
    )
