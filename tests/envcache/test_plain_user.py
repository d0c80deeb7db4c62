"""The env cache's tests again, as a plain user: building, sharing, removing and gc of envs
must not rely on root's power to ignore permissions (see tests/plainuser.py)."""

from __future__ import annotations

import pytest

from tests.plainuser import run_as_plain_user, skip_unless_possible

pytestmark = pytest.mark.slow


def test_the_env_cache_tests_pass_as_a_plain_user() -> None:
    skip_unless_possible()
    run = run_as_plain_user(["tests/envcache"])
    assert run.returncode == 0, run.output[-6000:]
    assert " passed" in run.summary and "failed" not in run.summary, run.output[-6000:]
