"""Real OS users for tests, and a process environment free of the developer's ISOLATE_*.

Every test user and group is named by :func:`unique`: its base name and the pid of the test
process (``isoadv-a-t1f2e``), so two runs of the suite on one machine never share or remove
each other's users, and what a killed run left is recognised (its pid is gone) and removed
by the next :func:`os_users`.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def _quiet(*argv: str) -> None:
    subprocess.run(argv, check=False, capture_output=True)


def _run(*argv: str) -> None:
    # Another test session may hold /etc/passwd's lock for a moment (exit 10): try again.
    for _ in range(20):
        done = subprocess.run(argv, check=False, capture_output=True, text=True)
        if done.returncode != 10:
            break
        time.sleep(0.2)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, argv, done.stdout, done.stderr)


_MARK = re.compile(r"^iso[a-z0-9-]*-t([0-9a-f]{1,8})$")


def unique(name: str) -> str:
    """``name`` for this test process only (see the module docstring)."""
    return f"{name}-t{os.getpid():x}"


def _pid_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def reap_leftovers() -> None:
    """Remove the test users and groups of runs whose process is gone."""
    for user in pwd.getpwall():
        found = _MARK.match(user.pw_name)
        if found and not _pid_alive(int(found.group(1), 16)):
            _quiet("userdel", user.pw_name)
    for group in grp.getgrall():
        found = _MARK.match(group.gr_name)
        if found and not _pid_alive(int(found.group(1), 16)):
            _quiet("groupdel", group.gr_name)


@contextmanager
def os_users(
    *names: str, groups: tuple[str, ...] = (), primary_group: str | None = None
) -> Iterator[dict[str, pwd.struct_passwd]]:
    """Create login-less users (members of ``groups``, created too); remove them all after,
    whatever happens, and remove leftovers of a crashed run before. With ``primary_group``
    (created too), that group is every one's primary group instead of a group of its own."""
    made = [*groups, *([primary_group] if primary_group and primary_group not in groups else [])]
    reap_leftovers()
    for name in names:
        _quiet("userdel", name)
    for group in made:
        _quiet("groupdel", group)
        _run("groupadd", group)
    membership = ["-G", ",".join(groups)] if groups else []
    primary = ["-g", primary_group] if primary_group else []
    try:
        for name in names:
            _run(
                "useradd",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                *membership,
                *primary,
                name,
            )
        yield {name: pwd.getpwnam(name) for name in names}
    finally:
        for name in names:
            _quiet("userdel", name)
        for group in made:
            _quiet("groupdel", group)


def clear_isolate_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop every ISOLATE_* variable but the test suite's own (ISOLATE_TEST_*)."""
    for name in list(os.environ):
        if name.startswith("ISOLATE_") and not name.startswith("ISOLATE_TEST_"):
            monkeypatch.delenv(name)
