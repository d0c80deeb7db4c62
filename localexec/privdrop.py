"""The privilege drop of a task process: becoming the mapped OS user, for good.

Called in the forked child after ``setsid`` and before anything of the DAG's runs (template
rendering, the import of DAG code). With no ``run_as`` the task runs as the scheduler's own
user (single-user use). Otherwise, as root, in this order (CERT POS36-C: groups and gid
before uid, or the gid change is no longer permitted):

1. the attempt's work directory (created fresh by root) is given to the user;
2. ``os.setgroups`` to the user's own groups (``os.getgrouplist``), dropping root's;
3. ``os.setresgid(gid, gid, gid)``, then ``os.setresuid(uid, uid, uid)``: real, effective
   and saved, so there is nothing to switch back to;
4. verify (CERT POS37-C): the ids and groups are exactly the user's, and ``setuid(0)`` and
   ``setgid(0)`` fail;
5. ``PR_SET_NO_NEW_PRIVS`` (no setuid binary can raise privileges again) and
   ``PR_SET_PDEATHSIG`` (the task dies with its supervisor). The death signal is set last:
   the kernel clears it whenever credentials change.

Refusing root and low uids as run-as users is the mapping's rule (docs/security.md); this
function refuses root again and fails closed on anything unexpected.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from isolate.errors import IsolateError

if TYPE_CHECKING:
    pass

_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_libc = ctypes.CDLL(None, use_errno=True)


class PrivilegeDropError(IsolateError):
    """The task process cannot become the user it must run as."""


def become(run_as: str | None, *, supervisor: int, work_dir: Path | None = None) -> str:
    """Become ``run_as`` for good (None: stay who we are); ``work_dir`` (fresh, root's) is
    given to the user first. Returns who we are now.

    ``supervisor`` is the pid of the process that forked this one, taken before the fork: if
    it is not our parent any more once the death signal is armed, it died while we were
    starting, and we must not outlive it (a pid read after the fork could already be init's).
    """
    if run_as is None:
        return describe_identity()
    entry = _user(run_as)
    if os.geteuid() != 0:
        if entry.pw_uid == os.geteuid():
            return describe_identity()
        # Fail closed: running a tenant's task as the scheduler's user would be a silent
        # privilege escalation for that tenant.
        raise PrivilegeDropError(
            f"cannot run as {run_as!r}: the scheduler runs as "
            f"{user_name(os.geteuid())!r}, and only root can switch users"
        )
    uid, gid = entry.pw_uid, entry.pw_gid
    groups = sorted(set(os.getgrouplist(entry.pw_name, gid)))
    if work_dir is not None:
        os.chown(work_dir, uid, gid, follow_symlinks=False)
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _verify(uid, gid, groups)
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != supervisor:  # it died before the death signal was armed
        raise PrivilegeDropError("the supervisor exited while the task was starting")
    return describe_identity()


def give_work_dir(work_dir: Path, run_as: str | None) -> None:
    """Hand a fresh, root-created work dir to ``run_as`` (the supervisor's side of a warm
    start, whose process dropped its privileges before the attempt existed)."""
    if run_as is None or os.geteuid() != 0:
        return
    entry = _user(run_as)
    os.chown(work_dir, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def identity_of(run_as: str | None) -> str:
    """:func:`describe_identity` of a process that became ``run_as`` (None: this one)."""
    if run_as is None or os.geteuid() != 0:
        return describe_identity()
    entry = _user(run_as)
    return f"{entry.pw_name} (uid {entry.pw_uid}, gid {entry.pw_gid})"


def _user(run_as: str) -> pwd.struct_passwd:
    try:
        entry = pwd.getpwnam(run_as)
    except KeyError:
        raise PrivilegeDropError(f"cannot run as {run_as!r}: no such user") from None
    if entry.pw_uid == 0:
        raise PrivilegeDropError(f"refusing to run a task as {run_as!r} (uid 0)")
    return entry


def _verify(uid: int, gid: int, groups: list[int]) -> None:
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise PrivilegeDropError("the privilege drop did not take: ids differ after it")
    if sorted(set(os.getgroups())) != groups:
        raise PrivilegeDropError("the privilege drop did not take: groups differ after it")
    for regain in (os.setuid, os.setgid):
        try:
            regain(0)
        except PermissionError:
            continue
        raise PrivilegeDropError("the privilege drop did not take: root could be regained")


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise PrivilegeDropError(f"prctl({option}) failed: {os.strerror(error)}")


def describe_identity() -> str:
    """``name (uid N, gid M)`` of this process, for the log header."""
    return f"{user_name(os.getuid())} (uid {os.getuid()}, gid {os.getgid()})"


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
