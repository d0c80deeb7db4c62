"""isolate doctor: a fresh home passes; loosened permissions and a bad interpreter fail."""

from __future__ import annotations

import json
import os
from pathlib import Path


def findings(cli, expect: int = 0) -> dict[str, dict]:
    result = cli("doctor", "--json", expect=expect)
    return {f["check"]: f for f in json.loads(result.stdout)}


def test_a_fresh_home_has_no_failures(cli, home: Path) -> None:
    found = findings(cli)
    assert found["home"]["status"] == "ok"
    assert found["private:isolate.db"]["status"] == "ok"
    assert found["private:isolate.toml"]["status"] == "ok"
    assert found["interpreter"]["status"] == "ok"
    assert found["tenants"]["status"] == "warn"  # no mapping: single-user node
    assert {"cgroup v2", "landlock", "bubblewrap"} <= set(found)


def test_loosened_permissions_fail(cli, home: Path, make_folder) -> None:
    cli("push", str(make_folder({"dag.py": 'from isolate import DAG\nDAG("d")\n'})))
    os.chmod(home / "isolate.db", 0o644)
    os.chmod(home / "envcache" / "envs", 0o777)
    os.chmod(home, 0o777)
    found = findings(cli, expect=1)
    assert found["private:isolate.db"]["status"] == "fail"
    assert "0644, not 0600" in found["private:isolate.db"]["detail"]
    assert found["envcache:envs"]["status"] == "fail"
    assert found["home"]["status"] == "fail"
    os.chmod(home, 0o711)


def test_an_interpreter_task_users_cannot_run_fails(cli, home: Path, monkeypatch) -> None:
    pyenv = Path("/root/.pyenv/versions")
    candidates = sorted(pyenv.glob("3.*/bin/python3")) if pyenv.is_dir() else []
    if not candidates:
        import pytest

        pytest.skip("no interpreter under root's 0700 home on this machine")
    monkeypatch.setenv("ISOLATE_ENV_PYTHON", str(candidates[0]))
    found = findings(cli, expect=1)
    assert found["interpreter"]["status"] == "fail"
