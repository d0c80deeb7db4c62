"""isolate doctor: a fresh home passes; loosened permissions, a bad interpreter and a
hardening that is required but missing fail."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from isolate.services import doctor, hostcaps
from tests.osusers import unique

RUN_AS = unique("isodoc-run")
SH_A, SH_B, SHARED = unique("isodoc-sh-a"), unique("isodoc-sh-b"), unique("isodoc-shared")


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


def test_hardening_is_reported_as_the_host_offers_it(cli, home: Path) -> None:
    found = findings(cli)
    usable, cgroups = hostcaps.probe()
    assert found["cgroup v2"]["status"] == ("ok" if usable else "warn")
    assert cgroups in found["cgroup v2"]["detail"]
    abi = hostcaps.landlock_abi()
    assert found["landlock"]["status"] == ("ok" if abi else "warn")
    assert hostcaps.describe_landlock(abi) in found["landlock"]["detail"]
    bwrap, finding = hostcaps.bubblewrap()
    assert found["bubblewrap"]["status"] == ("ok" if bwrap else "warn")
    assert finding in found["bubblewrap"]["detail"]


def without_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make bwrap seem not installed, to the real probe."""
    which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *a, **kw: None if name == "bwrap" else which(name, *a, **kw)
    )


def test_bubblewrap_required_but_missing_fails(cli, home: Path, monkeypatch) -> None:
    without_bwrap(monkeypatch)
    assert findings(cli)["bubblewrap"] == {
        "check": "bubblewrap",
        "status": "warn",
        "detail": "not used: bwrap not installed (Debian/Ubuntu: apt-get install bubblewrap)",
    }
    monkeypatch.setenv("ISOLATE_BUBBLEWRAP", "required")
    found = findings(cli, expect=1)["bubblewrap"]
    assert found["status"] == "fail"
    assert "required by the node's settings" in found["detail"]
    assert "bwrap not installed" in found["detail"]
    monkeypatch.setenv("ISOLATE_BUBBLEWRAP", "off")
    found = findings(cli)["bubblewrap"]
    assert found["status"] == "warn" and found["detail"].startswith("off in the settings")


def test_landlock_required_but_missing_fails(cli, home: Path, monkeypatch) -> None:
    monkeypatch.setattr(doctor, "landlock_abi", lambda: 0)
    monkeypatch.setenv("ISOLATE_LANDLOCK", "required")
    found = findings(cli, expect=1)["landlock"]
    assert found["status"] == "fail"
    assert hostcaps.describe_landlock(0) in found["detail"]


def test_off_in_the_settings_is_said(cli, home: Path, monkeypatch) -> None:
    monkeypatch.setenv("ISOLATE_LANDLOCK", "false")
    monkeypatch.setenv("ISOLATE_CGROUPS", "off")
    found = findings(cli)
    abi = hostcaps.landlock_abi()
    assert found["landlock"]["status"] == ("ok" if abi else "warn")
    assert found["landlock"]["detail"].startswith("off in the settings")
    assert found["cgroup v2"]["detail"].startswith("off in the settings")


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
    readable = os.access("/root", os.R_OK | os.X_OK) and pyenv.is_dir()
    candidates = sorted(pyenv.glob("3.*/bin/python3")) if readable else []
    if not candidates:
        pytest.skip("no interpreter under root's 0700 home on this machine")
    monkeypatch.setenv("ISOLATE_ENV_PYTHON", str(candidates[0]))
    found = findings(cli, expect=1)
    assert found["interpreter"]["status"] == "fail"


def test_a_mapping_every_user_can_read_is_a_warning(cli, home: Path, tmp_path, monkeypatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("a valid mapping names real users, made by root")
    from tests.osusers import os_users

    with os_users(RUN_AS) as _users:
        mapping = tmp_path / "tenants.toml"
        mapping.write_text(
            f'[[tenant]]\nname = "t"\ndags = ["t.*"]\npushers = ["root"]\nrun_as = "{RUN_AS}"\n'
        )
        monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(mapping))
        os.chmod(mapping, 0o644)
        found = findings(cli)["tenants"]
        assert found["status"] == "warn" and "readable by every user" in found["detail"]
        os.chmod(mapping, 0o600)
        assert findings(cli)["tenants"]["status"] == "ok"


def test_a_tenant_requiring_what_the_host_lacks_fails(
    cli, home: Path, tmp_path, monkeypatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("a valid mapping names real users, made by root")
    from tests.osusers import os_users

    without_bwrap(monkeypatch)
    with os_users(RUN_AS) as _users:
        mapping = tmp_path / "tenants.toml"
        mapping.write_text(
            '[[tenant]]\nname = "t"\ndags = ["t.*"]\npushers = ["root"]\n'
            f'run_as = "{RUN_AS}"\nhardening = {{ bubblewrap = "required" }}\n'
        )
        os.chmod(mapping, 0o600)
        monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(mapping))
        found = findings(cli, expect=1)
        assert found["tenants"]["status"] == "ok"
        assert found["bubblewrap"]["status"] == "fail"
        assert "required by tenant t, but not available" in found["bubblewrap"]["detail"]


def test_tenants_whose_users_share_a_primary_group_fail(
    cli, home: Path, tmp_path, monkeypatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("a valid mapping names real users, made by root")
    from tests.osusers import os_users

    with os_users(SH_A, SH_B, primary_group=SHARED) as made:
        mapping = tmp_path / "tenants.toml"
        mapping.write_text(
            f'[[tenant]]\nname = "a"\ndags = ["a.*"]\npushers = ["root"]\nrun_as = "{SH_A}"\n'
            f'[[tenant]]\nname = "b"\ndags = ["b.*"]\npushers = ["root"]\nrun_as = "{SH_B}"\n'
        )
        os.chmod(mapping, 0o600)
        monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(mapping))
        found = findings(cli, expect=1)["tenants"]
        assert found["status"] == "fail"
        gid = made[SH_A].pw_gid
        assert found["detail"].startswith(
            f"tenant[b].run_as: '{SH_B}' and tenant a's user '{SH_A}' share the "
            f"primary group '{SHARED}' (gid {gid}): "
        )
