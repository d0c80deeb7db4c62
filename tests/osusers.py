"""Real OS users for tests, and a process environment free of the developer's ISOLATE_*."""

from __future__ import annotations

import os
import pwd
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


@contextmanager
def os_users(
    *names: str, groups: tuple[str, ...] = (), primary_group: str | None = None
) -> Iterator[dict[str, pwd.struct_passwd]]:
    """Create login-less users (members of ``groups``, created too); remove them all after,
    whatever happens, and remove leftovers of a crashed run before. With ``primary_group``
    (created too), that group is every one's primary group instead of a group of its own."""
    made = [*groups, *([primary_group] if primary_group and primary_group not in groups else [])]
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
