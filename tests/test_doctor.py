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


def test_a_mapping_every_user_can_read_is_a_warning(cli, home: Path, tmp_path, monkeypatch) -> None:
    if os.geteuid() != 0:
        import pytest

        pytest.skip("a valid mapping names real users, made by root")
    from tests.osusers import os_users

    with os_users("isodoc-run") as _users:
        mapping = tmp_path / "tenants.toml"
        mapping.write_text(
            '[[tenant]]\nname = "t"\ndags = ["t.*"]\npushers = ["root"]\nrun_as = "isodoc-run"\n'
        )
        monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(mapping))
        os.chmod(mapping, 0o644)
        found = findings(cli)["tenants"]
        assert found["status"] == "warn" and "readable by every user" in found["detail"]
        os.chmod(mapping, 0o600)
        assert findings(cli)["tenants"]["status"] == "ok"
