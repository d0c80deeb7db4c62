"""The whole suite again, as a plain user: isolate must not rely on root's power to ignore
permissions for what any user may do (build, share and gc envs, push, lock, test, the tour,
the demo). Tests that need root skip there, saying so (see tests/plainuser.py)."""

from __future__ import annotations

import pytest

from tests.plainuser import run_as_plain_user, skip_unless_possible

pytestmark = pytest.mark.slow


def test_the_suite_passes_as_a_plain_user() -> None:
    skip_unless_possible()
    run = run_as_plain_user(["tests", "-p", "no:cacheprovider"])
    assert run.returncode == 0, run.output[-6000:]
    assert " passed" in run.summary and "failed" not in run.summary, run.output[-6000:]
