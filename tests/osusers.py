"""Real OS users for tests, and a process environment free of the developer's ISOLATE_*."""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def _quiet(*argv: str) -> None:
    subprocess.run(argv, check=False, capture_output=True)


@contextmanager
def os_users(*names: str, groups: tuple[str, ...] = ()) -> Iterator[dict[str, pwd.struct_passwd]]:
    """Create login-less users (members of ``groups``, created too); remove them all after,
    whatever happens, and remove leftovers of a crashed run before."""
    for name in names:
        _quiet("userdel", name)
    for group in groups:
        _quiet("groupdel", group)
        subprocess.run(["groupadd", group], check=True)
    membership = ["-G", ",".join(groups)] if groups else []
    try:
        for name in names:
            subprocess.run(
                ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", *membership, name],
                check=True,
            )
        yield {name: pwd.getpwnam(name) for name in names}
    finally:
        for name in names:
            _quiet("userdel", name)
        for group in groups:
            _quiet("groupdel", group)


def clear_isolate_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop every ISOLATE_* variable but the test suite's own (ISOLATE_TEST_*)."""
    for name in list(os.environ):
        if name.startswith("ISOLATE_") and not name.startswith("ISOLATE_TEST_"):
            monkeypatch.delenv(name)
