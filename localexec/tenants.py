"""The scheduler's view of the tenant mapping: re-read whenever the file changes, audited.

No mapping file means single-user use: tasks run as the scheduler's own user, unless that
is root, which starts no task without a mapping (the ``allow_root_tasks`` setting exists for
throwaway nodes such as the tour and the tests). Once a mapping exists, every attempt takes
its OS user from it at launch (an admin's change applies from the next attempt), a DAG no
tenant owns does not run, and a mapping that became invalid stops every task from starting
(fail closed) until it is fixed.

The mapping is checked against the node's users and groups too (no shared run-as user, no
primary group shared between tenants' users), so it is also checked again when the local
user database changes: an admin's ``usermod -g users svc-b`` after the mapping was loaded
stops the affected tasks like an edit of the mapping would.
"""

from __future__ import annotations

import os
from pathlib import Path

from isolate.config import Config, root_tasks_allowed
from isolate.errors import IsolateError
from isolate.model import Limits
from isolate.store import Store
from isolate.tenancy import (
    TenancyError,
    Tenant,
    TenantLimits,
    TenantMap,
    load_tenants,
    tenants_path,
)

# The local user database: a change to either file is a change to what the mapping means.
USER_DATABASE_FILES = (Path("/etc/passwd"), Path("/etc/group"))

Stamp = tuple[int, int, int, int]


def _stamp(info: os.stat_result) -> Stamp:
    return (info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size)


def _users_stamp() -> tuple[Stamp | None, ...]:
    stamps: list[Stamp | None] = []
    for path in USER_DATABASE_FILES:
        try:
            stamps.append(_stamp(os.stat(path)))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


class UnownedDagError(IsolateError):
    """No tenant of the mapping owns the DAG: its tasks do not run."""


class TenantWatch:
    def __init__(self, config: Config, store: Store | None) -> None:
        """``store`` receives the audit records of reloads (None: not audited, e.g. a test run)."""
        self.config = config
        self.store = store
        self._stamp: tuple[Stamp, tuple[Stamp | None, ...]] | None = None
        self._mapping: TenantMap | None = None
        self._error: str | None = None

    def current(self) -> TenantMap | None:
        """The mapping as of now (None: there is none); raises if it is invalid."""
        path = tenants_path(self.config)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            if self._stamp is not None:
                self._record("tenants.removed", "ok", {})
            self._stamp, self._mapping, self._error = None, None, None
            return None
        stamp = (_stamp(info), _users_stamp())
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._mapping, self._error = load_tenants(self.config), None
                names = [t.name for t in self._mapping.tenants]
                self._record("tenants.reload", "ok", {"tenants": names})
            except TenancyError as exc:
                self._mapping, self._error = None, str(exc)
                self._record("tenants.reload", "error", {"error": str(exc)})
        if self._error is not None:
            raise TenancyError(f"the tenant mapping is invalid, no task starts: {self._error}")
        return self._mapping

    def tenant_for(self, dag_id: str) -> Tenant | None:
        """The DAG's tenant (None in single-user use); raises if no tenant owns it."""
        mapping = self.current()
        if mapping is None:
            if os.geteuid() == 0 and not root_tasks_allowed(self.config):
                ignored = (
                    f" ({self.config.config_file} says allow_root_tasks, but root does not own "
                    "it, or others may write it)"
                    if self.config.settings.allow_root_tasks
                    else ""
                )
                raise UnownedDagError(
                    f"no tenant mapping at {tenants_path(self.config)}: a scheduler running as "
                    "root starts tasks only as mapped users (create the mapping; "
                    "allow_root_tasks, or `isolate init --single-user`, is for throwaway "
                    f"single-user nodes only){ignored}"
                )
            return None
        tenant = mapping.owner(dag_id)
        if tenant is None:
            raise UnownedDagError(
                f"no tenant owns DAG {dag_id!r}, so it does not run: "
                "an admin must add it to the mapping (see `isolate tenants check`)"
            )
        return tenant

    def _record(self, action: str, outcome: str, details: dict[str, object]) -> None:
        if self.store is None:
            return
        path = str(tenants_path(self.config))
        self.store.audit(
            "scheduler", action, None, outcome=outcome, details={"file": path, **details}
        )


def capped(task: Limits, tenant: TenantLimits) -> Limits:
    """The task's limits, none above its tenant's (the admin's word is the ceiling)."""

    def low(a: int | None, b: int | None) -> int | None:
        return b if a is None else a if b is None else min(a, b)

    return Limits(
        memory=low(task.memory, tenant.memory),
        processes=low(task.processes, tenant.processes),
        cpu_time=low(task.cpu_time, tenant.cpu_time),
        open_files=low(task.open_files, tenant.open_files),
    )
