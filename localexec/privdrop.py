"""The privilege drop of a task process: the one place where the tenancy work plugs in.

Called in the forked child after ``setsid`` and before anything of the DAG's runs (template
rendering, the import of DAG code). Until the tenancy issue (issue 5 §3) lands, tasks run as
the scheduler's own user and this is a check, not a drop. The tenancy version will, in this
order (CERT POS36-C: groups and gid before uid, or the gid change is no longer permitted):

1. ``os.setgroups`` to the mapped user's own groups (``os.getgrouplist``), dropping root's;
2. ``os.setresgid(gid, gid, gid)``;
3. ``os.setresuid(uid, uid, uid)`` (real, effective and saved: nothing to switch back to);
4. verify (CERT POS37-C): ``os.setuid(0)`` must fail and ``getresuid``/``getresgid``/
   ``getgroups`` must show only the mapped user; then ``PR_SET_NO_NEW_PRIVS`` and
   ``PR_SET_PDEATHSIG`` via prctl.

Refusing root and low uids as run-as users is the mapping's rule (DESIGN.md invariants); this
function enforces what it is given and fails closed.
"""

from __future__ import annotations

import os
import pwd
from typing import TYPE_CHECKING

from isolate.errors import IsolateError

if TYPE_CHECKING:
    from localexec.attempt import Attempt


class PrivilegeDropError(IsolateError):
    """The task process cannot become the user it must run as."""


def drop_privileges(attempt: Attempt) -> str:
    """Become ``attempt.run_as`` (today: stay the current user). Returns who we are now."""
    current = user_name(os.getuid())
    if attempt.run_as is not None and attempt.run_as != current:
        # Fail closed: running a tenant's task as the scheduler's user would be a silent
        # privilege escalation for that tenant.
        raise PrivilegeDropError(
            f"cannot run as {attempt.run_as!r}: switching users is not implemented yet "
            f"(the scheduler runs as {current!r})"
        )
    return describe_identity()


def describe_identity() -> str:
    """``name (uid N, gid M)`` of this process, for the log header."""
    return f"{user_name(os.getuid())} (uid {os.getuid()}, gid {os.getgid()})"


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
