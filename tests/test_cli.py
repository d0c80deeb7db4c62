"""The isolate command end to end: init, push, dags ..., db upgrade, and error behaviour."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import isolate
from isolate.config import current_user
from isolate.store import Store, migrate
from tests.conftest import ETL_DAG


def push_json(cli, folder: Path, *extra: str) -> list[dict]:
    return json.loads(cli("push", str(folder), "--json", *extra).stdout)


def test_init_creates_a_home_with_tight_permissions(home: Path, cli) -> None:
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in home.iterdir()}
    assert stat.S_IMODE(home.stat().st_mode) == 0o711
    assert modes["isolate.toml"] == 0o600
    assert modes["isolate.db"] == 0o600
    assert modes["tmp"] == 0o700 and modes["envcache"] == 0o755 and modes["logs"] == 0o711
    again = cli("init")
    assert "checked isolate home" in again.stdout


def test_push_is_idempotent_and_versions_only_changes(cli, make_folder) -> None:
    folder = make_folder({"etl.py": ETL_DAG})
    first = push_json(cli, folder, "-m", "first")
    assert first[0]["dag_id"] == "etl" and first[0]["version"] == 1 and first[0]["status"] == "new"
    again = push_json(cli, folder)
    assert first[0]["env_built"] is True and len(first[0]["env_key"]) == 64
    assert again[0] == {**first[0], "status": "unchanged", "env_built": False}
    (folder / "etl.py").write_text(
        (folder / "etl.py").read_text().replace('"retries": 1', '"retries": 3')
    )
    second = push_json(cli, folder, "-m", "more retries")
    assert second[0]["version"] == 2 and second[0]["spec_hash"] != first[0]["spec_hash"]
    history = json.loads(cli("dags", "history", "etl", "--json").stdout)
    assert [(v["version"], v["message"]) for v in history] == [(1, "first"), (2, "more retries")]
    assert {v["pushed_by"] for v in history} == {current_user()}
    table = cli("push", str(folder)).stdout
    assert "unchanged" in table and "etl" in table


def test_show_list_and_diff(cli, make_folder) -> None:
    folder = make_folder({"etl.py": ETL_DAG})
    cli("push", str(folder))
    (folder / "etl.py").write_text(
        (folder / "etl.py")
        .read_text()
        .replace('schedule="@daily"', 'schedule="@hourly"')
        .replace(
            "load(extract()) >> report", "load(extract())\n    CommandTask('audit', command='true')"
        )
    )
    (folder / "requirements.txt").write_text("# changed lock\n")
    cli("push", str(folder))

    shown = json.loads(cli("dags", "show", "etl", "--version", "1", "--json").stdout)
    assert shown["version"] == 1 and shown["spec"]["schedule"] == "@daily"
    assert shown["spec"]["dag_id"] == "etl" and shown["paused"] is False
    text = cli("dags", "show", "etl").stdout
    assert "etl v2" in text and "@hourly" in text and "audit" in text

    listed = json.loads(cli("dags", "list", "--json").stdout)
    assert [(d["dag_id"], d["latest_version"]) for d in listed] == [("etl", 2)]

    diff = json.loads(cli("dags", "diff", "etl", "1", "2", "--json").stdout)
    assert diff["dag_fields"] == {"schedule": {"old": "@daily", "new": "@hourly"}}
    assert diff["tasks_added"] == ["audit"] and diff["tasks_removed"] == []
    assert diff["edges_removed"] == [["load", "report"]] and diff["edges_added"] == []
    assert diff["environment"] is not None and diff["bundle"] is not None
    human = cli("dags", "diff", "etl", "1", "2").stdout
    assert "+ task   audit" in human and "- edge   load >> report" in human
    assert "schedule" in human and "~ env" in human
    assert "no changes" in cli("dags", "diff", "etl", "2", "2").stdout


def test_pause_unpause_and_the_audit_log(cli, make_folder, home: Path) -> None:
    cli("push", str(make_folder({"etl.py": ETL_DAG})))
    assert cli("dags", "pause", "etl").stdout.strip() == "etl paused"
    assert cli("dags", "pause", "etl").stdout.strip() == "etl was already paused"
    assert json.loads(cli("dags", "list", "--json").stdout)[0]["paused"] is True
    assert cli("dags", "unpause", "etl").stdout.strip() == "etl unpaused"
    with Store.open(f"sqlite:///{home / 'isolate.db'}") as store:
        actions = [(a.action, a.outcome) for a in reversed(store.list_audit(target="etl"))]
    assert actions == [("push", "ok"), ("pause", "ok"), ("pause", "unchanged"), ("unpause", "ok")]
    listed = json.loads(cli("audit", "--target", "etl", "--json").stdout)
    newest = listed[0]
    assert (newest["action"], newest["outcome"], newest["actor"]) == (
        "unpause",
        "ok",
        current_user(),
    )
    assert listed[-1]["details"]["version"] == 1
    assert "unpause" in cli("audit", "--limit", "1").stdout


def test_invalid_push_is_one_line_and_stores_nothing(cli, make_folder, home: Path) -> None:
    bad = make_folder({"etl.py": ETL_DAG.replace('schedule="@daily"', 'schedule="@sometimes"')})
    result = cli("push", str(bad), expect=4)
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        "isolate: error: dag etl: schedule: unknown preset '@sometimes'"
    )
    assert json.loads(cli("dags", "list", "--json").stdout) == []
    with Store.open(f"sqlite:///{home / 'isolate.db'}") as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM blobs").scalar() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM dag_versions").scalar() == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["dags", "show", "nope"], 3, "no DAG 'nope'"),
        (["dags", "history", "nope"], 3, "no DAG 'nope'"),
        (["dags", "pause", "nope"], 3, "no DAG 'nope'"),
        (["dags", "diff", "nope", "1", "2"], 3, "nope"),
        (["push", "/nonexistent/folder"], 2, "no such file or directory"),
    ],
)
def test_expected_errors_have_exit_codes(cli, args, code, message) -> None:
    result = cli(*args, expect=code)
    assert message in result.stderr
    assert result.stderr.count("\n") == 1


def test_missing_version_names_the_range(cli, make_folder) -> None:
    cli("push", str(make_folder({"etl.py": ETL_DAG})))
    result = cli("dags", "show", "etl", "--version", "7", expect=3)
    assert "7" in result.stderr and "etl" in result.stderr


def test_uninitialized_home_and_bad_config(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ISOLATE_HOME", str(tmp_path / "never"))
    result = CliRunner().invoke(isolate, ["dags", "list"])
    assert result.exit_code == 5 and "run `isolate init" in result.stderr
    home = tmp_path / "h"
    home.mkdir()
    (home / "isolate.toml").write_text("max_spec_bytes = [\n")
    result = CliRunner().invoke(isolate, ["dags", "list", "--home", str(home)])
    assert result.exit_code == 5 and "not valid TOML" in result.stderr
    (home / "isolate.toml").write_text('colour = "blue"\n')
    result = CliRunner().invoke(isolate, ["init", "--home", str(home)])
    assert result.exit_code == 5 and "unknown setting 'colour'" in result.stderr


def test_outdated_schema_asks_for_db_upgrade(cli, home: Path) -> None:
    url = f"sqlite:///{home / 'isolate.db'}"
    migrate.downgrade(url, "base")
    result = cli("dags", "list", expect=6)
    assert "run `isolate init` or `isolate db upgrade`" in result.stderr
    assert "upgraded from empty" in cli("db", "upgrade").stdout
    assert "already at revision" in cli("db", "upgrade").stdout
    cli("dags", "list")


def test_settings_from_environment_override_the_file(cli, make_folder, monkeypatch) -> None:
    monkeypatch.setenv("ISOLATE_PAUSED_AT_CREATION", "true")
    cli("push", str(make_folder({"etl.py": ETL_DAG})))
    assert json.loads(cli("dags", "list", "--json").stdout)[0]["paused"] is True
    monkeypatch.setenv("ISOLATE_MAX_BUNDLE_BYTES", "1k")
    result = cli("push", str(make_folder({"etl.py": ETL_DAG})), expect=4)
    assert "max_bundle_bytes" in result.stderr


def _all_commands(group, prefix=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _all_commands(command, (*prefix, name))
        else:
            yield (*prefix, name)


# Commands that use no home of the user's: the demo makes a throwaway one; completion only
# prints a script; version only its own.
HOMELESS = {("demo",), ("completion",), ("version",)}


@pytest.mark.parametrize("path", sorted(_all_commands(isolate)), ids=" ".join)
def test_every_command_has_help_with_an_example_and_home(path) -> None:
    result = CliRunner().invoke(isolate, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.stdout
    if path not in HOMELESS:
        assert "--home" in result.stdout


def test_the_installed_command_prints_no_traceback(tmp_path: Path, make_folder) -> None:
    exe = Path(sys.executable).parent / "isolate"
    env = {**os.environ, "ISOLATE_HOME": str(tmp_path / "h")}
    subprocess.run([exe, "init"], env=env, check=True, capture_output=True)
    bad = make_folder({"broken.py": "from isolate import DAG\nraise RuntimeError('boom')\n"})
    out = subprocess.run([exe, "push", str(bad)], env=env, capture_output=True, text=True)
    assert out.returncode == 4
    assert out.stderr == "isolate: error: broken.py (broken.py:2): RuntimeError: boom\n"
    assert "Traceback" not in out.stderr
