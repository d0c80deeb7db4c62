"""``isolate demo``: two teams' DAGs, conflicting library versions, run side by side."""

from __future__ import annotations

import json
import os
import pwd
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import demo as demo_module
from cli.main import isolate

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from demo_wheels import WHEELHOUSE, build  # noqa: E402


def test_the_shipped_wheelhouse_is_what_its_script_builds(tmp_path: Path) -> None:
    """The wheels in the repository are reproducible from readable source, not opaque."""
    built = {wheel.name: wheel.read_bytes() for wheel in build(tmp_path)}
    shipped = {wheel.name: wheel.read_bytes() for wheel in WHEELHOUSE.glob("*.whl")}
    assert built == shipped and len(built) == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo makes OS users only as root")
def test_the_demo_runs_each_team_in_its_env_as_its_user_and_cleans_up() -> None:
    result = CliRunner().invoke(isolate, ["demo", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    rows = {(r["dag_id"], r["task_id"]): r for r in shown["tasks"]}
    assert set(rows) == {
        (f"demo.{team}", task) for team in ("north", "south") for task in
        ("extract", "summarize", "whoami")
    }  # fmt: skip
    assert all(r["state"] == "success" and r["duration"] is not None for r in rows.values())
    for team, version in (("north", "1.0"), ("south", "2.0")):
        mine = [r for (dag, _), r in rows.items() if dag == f"demo.{team}"]
        assert {r["user"] for r in mine} == {f"isodemo-{team}"}
        assert {r["library"] for r in mine} == {version, None}  # whoami reports none
        assert len({r["env_key"] for r in mine}) == 1
    assert rows["demo.north", "extract"]["env_key"] != rows["demo.south", "extract"]["env_key"]
    assert shown["node"] is None  # removed
    for team in ("north", "south"):
        with pytest.raises(KeyError):
            pwd.getpwnam(f"isodemo-{team}")


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo makes OS users only as root")
def test_the_demo_table_says_what_ran_where() -> None:
    result = CliRunner().invoke(isolate, ["demo"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["DAG", "TASK", "STATE", "OS", "USER", "ENV", "DEMOLIB", "DURATION"]
    assert "demo.north  extract    success  isodemo-north" in result.stdout
    assert "as its team's OS user (isodemo-north, isodemo-south)" in result.stdout
    assert "removed the users isodemo-north, isodemo-south" in result.stderr


def test_without_root_the_demo_says_tasks_run_as_you(monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []
    monkeypatch.setattr(demo_module.os, "geteuid", lambda: 4321)
    with demo_module._demo_users(said.append) as users:
        assert users is None
    assert said[0].startswith("demo: not root: the tasks run as you (")
    assert "not root, so no OS users of its own" in demo_module._who(None)
