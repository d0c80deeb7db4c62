"""The scheduler with a tenant mapping: tasks run as the mapped user, unowned DAGs do not run,
and an admin's change to the mapping applies from the next attempt, audited."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import isolate
from isolate.config import load_config
from isolate.services.home import open_store
from localexec.scheduler import Scheduler
from tests.conftest import PYTHON, write_folder
from tests.osusers import clear_isolate_env, os_users, unique

FIRST, SECOND = unique("isotr-first"), unique("isotr-second")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@pytest.fixture(scope="module")
def users() -> Iterator[tuple[pwd.struct_passwd, pwd.struct_passwd]]:
    with os_users(FIRST, SECOND) as made:
        yield made[FIRST], made[SECOND]


@pytest.fixture
def node(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A home task users can traverse, and a root-owned mapping file beside it."""
    base = Path(tempfile.mkdtemp(prefix="isolate-tenancy-"))
    os.chmod(base, 0o711)
    (base / "etc").mkdir(mode=0o755)
    clear_isolate_env(monkeypatch)
    monkeypatch.setenv("ISOLATE_HOME", str(base / "home"))
    monkeypatch.setenv("ISOLATE_OFFLINE", "true")
    monkeypatch.setenv("ISOLATE_ENV_PYTHON", PYTHON)
    monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(base / "etc" / "tenants.toml"))
    assert CliRunner().invoke(isolate, ["init"]).exit_code == 0
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def write_mapping(base: Path, run_as: str) -> None:
    path = base / "etc" / "tenants.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [[tenant]]
            name = "team"
            dags = ["team.*"]
            pushers = ["root"]
            run_as = "{run_as}"
            limits = {{ open_files = 64 }}
            """
        )
    )
    os.chmod(path, 0o644)


def cli(*args: str) -> dict:
    result = CliRunner().invoke(isolate, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def schedule() -> None:
    config = load_config(None)
    with (
        open_store(config) as store,
        Scheduler(config, store, parallelism=2, poll_interval=0.02) as scheduler,
    ):
        scheduler.run(until_idle=True)


WHOAMI = """
    import os, resource
    from isolate import DAG, task

    @task
    def whoami():
        return [os.getuid(), resource.getrlimit(resource.RLIMIT_NOFILE)[0]]

    with DAG("{dag_id}"):
        whoami()
"""


def test_tasks_run_as_the_mapped_user_and_follow_mapping_changes(
    node: Path, users: tuple[pwd.struct_passwd, pwd.struct_passwd]
) -> None:
    first, second = users
    write_mapping(node, FIRST)
    for dag_id in ("team.etl", "stray"):
        folder = write_folder(node / "src" / dag_id, {"dag.py": WHOAMI.format(dag_id=dag_id)})
        cli("push", str(folder))
    owned = cli("trigger", "team.etl")["run_id"]
    stray = cli("trigger", "stray")["run_id"]
    schedule()
    task = cli("runs", "show", owned)["tasks"][0]
    assert task["state"] == "success" and task["run_as"] == FIRST
    assert task["xcom"] == [first.pw_uid, 64]  # the tenant's open_files cap applies
    unowned = cli("runs", "show", stray)["tasks"][0]
    assert unowned["state"] == "failed" and unowned["try_number"] == 1
    assert "no tenant owns DAG 'stray', so it does not run" in unowned["outcome"]
    log = (node / "home" / "logs" / "stray" / stray / "whoami" / "1.log").read_text()
    assert "no tenant owns DAG 'stray'" in log

    write_mapping(node, SECOND)  # an admin's change: the next attempt runs as the new user
    again = cli("trigger", "team.etl")["run_id"]
    schedule()
    assert cli("runs", "show", again)["tasks"][0]["xcom"][0] == second.pw_uid
    reloads = [r for r in cli("audit") if r["action"] == "tenants.reload"]
    assert len(reloads) >= 2 and all(r["outcome"] == "ok" for r in reloads)


def test_an_unsafe_mapping_stops_every_task_from_starting(
    node: Path, users: tuple[pwd.struct_passwd, pwd.struct_passwd]
) -> None:
    write_mapping(node, FIRST)
    os.chmod(node / "etc" / "tenants.toml", 0o666)  # writable by anyone: not an admin's word
    folder = write_folder(node / "src" / "team", {"dag.py": WHOAMI.format(dag_id="team.x")})
    cli("push", str(folder))
    run_id = cli("trigger", "team.x")["run_id"]
    schedule()
    task = cli("runs", "show", run_id)["tasks"][0]
    assert task["state"] == "failed"
    assert "the tenant mapping is invalid, no task starts" in task["outcome"]
    audit = [r for r in cli("audit") if r["action"] == "tenants.reload"]
    assert audit[0]["outcome"] == "error"


def test_as_root_without_a_mapping_no_task_starts(node: Path) -> None:
    folder = write_folder(node / "src" / "lone", {"dag.py": WHOAMI.format(dag_id="lone")})
    cli("push", str(folder))
    run_id = cli("trigger", "lone")["run_id"]
    schedule()
    task = cli("runs", "show", run_id)["tasks"][0]
    assert task["state"] == "failed" and task["try_number"] == 1
    assert "a scheduler running as root starts tasks only as mapped users" in task["outcome"]


def test_isolate_test_follows_the_same_rule(
    node: Path, users: tuple[pwd.struct_passwd, pwd.struct_passwd]
) -> None:
    folder = write_folder(node / "src" / "adhoc", {"dag.py": WHOAMI.format(dag_id="team.adhoc")})
    refused = CliRunner().invoke(isolate, ["test", str(folder), "whoami"])
    assert refused.exit_code != 0 and "starts tasks only as mapped users" in refused.stderr
    write_mapping(node, FIRST)
    ran = CliRunner().invoke(isolate, ["test", str(folder), "whoami"], catch_exceptions=False)
    assert ran.exit_code == 0, ran.output
    assert f"xcom: [{users[0].pw_uid}, 64]" in ran.stdout


TWO_TENANTS = """
[[tenant]]
name = "team"
dags = ["team.*"]
pushers = ["root"]
run_as = "{first}"

[[tenant]]
name = "other"
dags = ["other.*"]
pushers = ["root"]
run_as = "{second}"
"""

SNOOP = """
    import os
    from isolate import DAG, task

    def record(context):
        with open("uid", "w") as fh:
            fh.write(str(os.getuid()))

    @task
    def snoop(path):
        try:
            os.listdir(path)
            return "read"
        except PermissionError:
            return "denied"

    @task(on_failure_callback=record)
    def fail():
        raise RuntimeError("for the callback")

    with DAG("{dag_id}"):
        snoop("{path}")
        fail()
"""


def test_tenants_cannot_read_each_others_bundles_and_callbacks_run_as_the_tenant(
    node: Path, users: tuple[pwd.struct_passwd, pwd.struct_passwd]
) -> None:
    first, second = users
    mapping = node / "etc" / "tenants.toml"
    mapping.write_text(TWO_TENANTS.format(first=FIRST, second=SECOND))
    os.chmod(mapping, 0o644)
    team_bundles = node / "home" / "bundles" / "tenants" / "team"
    for dag_id in ("team.a", "other.b"):
        source = SNOOP.format(dag_id=dag_id, path=team_bundles)
        cli("push", str(write_folder(node / "src" / dag_id, {"dag.py": source})))
    runs = {dag_id: cli("trigger", dag_id)["run_id"] for dag_id in ("team.a", "other.b")}
    schedule()
    seen = {
        dag_id: {t["task_id"]: t for t in cli("runs", "show", run_id)["tasks"]}
        for dag_id, run_id in runs.items()
    }
    assert seen["team.a"]["snoop"]["xcom"] == "read"  # its own code
    assert seen["other.b"]["snoop"]["xcom"] == "denied"  # another tenant's code
    stat = team_bundles.stat()
    assert (stat.st_uid, stat.st_gid, stat.st_mode & 0o777) == (0, first.pw_gid, 0o750)
    callback_dir = node / "home" / "work" / "team.a" / runs["team.a"] / "fail" / "1.on_failure"
    assert (callback_dir / "uid").read_text() == str(first.pw_uid)
    log = node / "home" / "logs" / "other.b" / runs["other.b"] / "snoop" / "1.log"
    info = log.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, second.pw_gid, 0o640)


LIBRARY = """
    import os
    from isolate import DAG, task

    @task
    def seen():
        import tinylib  # in the task's env only: the push imports this file without it

        return {{"version": tinylib.VERSION, "uid": os.getuid()}}

    with DAG("{dag_id}"):
        seen()
"""


def test_two_tenants_with_conflicting_library_versions_run_as_two_users(
    node: Path,
    users: tuple[pwd.struct_passwd, pwd.struct_passwd],
    wheelhouse,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The issue's done-when: each tenant's DAG pins its own version of one library; each
    runs as its own OS user in its own env and sees its own version."""
    first, second = users
    monkeypatch.setenv("ISOLATE_FIND_LINKS", str(wheelhouse.path))
    mapping = node / "etc" / "tenants.toml"
    mapping.write_text(TWO_TENANTS.format(first=FIRST, second=SECOND))
    os.chmod(mapping, 0o600)
    runs = {}
    for dag_id, pin in (("team.old", "tinylib==1.0"), ("other.new", "tinylib==2.0")):
        folder = write_folder(
            node / "src" / dag_id, {"dag.py": LIBRARY.format(dag_id=dag_id)}, wheelhouse.lock(pin)
        )
        cli("push", str(folder))
        runs[dag_id] = cli("trigger", dag_id)["run_id"]
    schedule()
    shown = {dag_id: cli("runs", "show", run_id)["tasks"][0] for dag_id, run_id in runs.items()}
    assert shown["team.old"]["xcom"] == {"version": "1.0", "uid": first.pw_uid}
    assert shown["other.new"]["xcom"] == {"version": "2.0", "uid": second.pw_uid}
    assert (shown["team.old"]["run_as"], shown["other.new"]["run_as"]) == (FIRST, SECOND)
    assert shown["team.old"]["env_key"] != shown["other.new"]["env_key"]
