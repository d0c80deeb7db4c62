"""The database restarting under a running scheduler: it waits, reconnects and loses nothing.

The local PostgreSQL and MariaDB services are really stopped and started again (as root, on
this machine's loopback servers only), while a task runs: its outcome is recorded once the
database is back, the next task starts then, and nothing runs twice.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import isolate
from isolate.config import load_config
from isolate.home import open_store
from isolate.states import RunState, TaskState
from isolate.store.engine import parse_url
from isolate.triggering import trigger
from localexec.scheduler import Scheduler
from tests.conftest import PYTHON, write_folder
from tests.databases import backend_label, drop_schema, server_urls
from tests.osusers import clear_isolate_env

DAG = """
    import time
    from isolate import DAG, task

    @task
    def slow():
        time.sleep({seconds})
        return "slow"

    @task
    def after(value):
        return value + "+after"

    with DAG("outage"):
        after(slow())
"""


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(port: int, up: bool, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while _port_open(port) != up:
        if time.monotonic() > deadline:
            raise AssertionError(f"port {port} still {'closed' if up else 'open'}")
        time.sleep(0.2)


def _postgres_control() -> tuple[Callable[[], None], Callable[[], None]] | None:
    clusters = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not clusters or shutil.which("pg_ctlcluster") is None:
        return None
    version = clusters[-1]

    def control(action: str) -> Callable[[], None]:
        argv = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]
        if action == "stop":
            argv += ["-m", "fast"]
        return lambda: subprocess.run(argv, check=True, capture_output=True)

    return control("stop"), control("start")


def _mariadb_control() -> tuple[Callable[[], None], Callable[[], None]] | None:
    admin = shutil.which("mariadb-admin") or shutil.which("mysqladmin")
    if admin is None or not os.path.exists("/usr/sbin/mariadbd"):
        return None

    def stop() -> None:
        subprocess.run(
            [admin, "-uroot", "-h127.0.0.1", "shutdown"], check=True, capture_output=True
        )

    def start() -> None:
        subprocess.run(
            [
                "start-stop-daemon",
                "--start",
                "--oknodo",
                "--background",
                "--exec",
                "/usr/sbin/mariadbd",
            ],
            check=True,
            capture_output=True,
        )

    return stop, start


def _service(url: str) -> tuple[int, Callable[[], None], Callable[[], None]]:
    """(port, stop, start) of the local server behind ``url``, or a skip saying why not."""
    if os.geteuid() != 0:
        pytest.skip("stopping and starting the database service needs root")
    parsed = parse_url(url)
    if parsed.host not in ("127.0.0.1", "localhost"):
        pytest.skip(f"{backend_label(url)} is not a local service this test may restart")
    backend = backend_label(url)
    control = _postgres_control() if backend == "postgresql" else _mariadb_control()
    if control is None:
        pytest.skip(f"no way to stop and start the local {backend} service here")
    port = parsed.port or (5432 if backend == "postgresql" else 3306)
    return port, *control


@pytest.fixture(params=[pytest.param(u, id=backend_label(u)) for u in server_urls()] or [None])
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param is None:
        pytest.skip("no server databases configured (ISOLATE_TEST_DATABASE_URLS)")
    drop_schema(request.param)
    yield request.param
    drop_schema(request.param)


def test_the_scheduler_outlives_a_database_restart_and_loses_nothing(
    server_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port, stop, start = _service(server_url)
    clear_isolate_env(monkeypatch)
    monkeypatch.setenv("ISOLATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ISOLATE_DATABASE_URL", server_url)
    monkeypatch.setenv("ISOLATE_OFFLINE", "true")
    monkeypatch.setenv("ISOLATE_ENV_PYTHON", PYTHON)
    monkeypatch.setenv("ISOLATE_ALLOW_ROOT_TASKS", "true")
    runner = CliRunner()
    assert runner.invoke(isolate, ["init"]).exit_code == 0
    folder = write_folder(tmp_path / "src", {"dag.py": textwrap.dedent(DAG.format(seconds=3))})
    assert runner.invoke(isolate, ["push", str(folder)]).exit_code == 0
    config = load_config(None)
    with open_store(config) as store:
        run_id = trigger(store, "outage", actor="test").run_id

    outage: dict[str, float] = {}

    def restart_while_slow_runs() -> None:
        with open_store(config) as watcher:
            deadline = time.monotonic() + 60
            while watcher.tasks.get("outage", run_id, "slow").state is not TaskState.RUNNING:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        outage["stopped"] = time.monotonic()
        stop()
        _wait_port(port, up=False)
        time.sleep(5)  # the task ends meanwhile: its outcome must wait for the database
        start()
        _wait_port(port, up=True)
        outage["started"] = time.monotonic()

    restarter = threading.Thread(target=restart_while_slow_runs, daemon=True)
    restarter.start()
    try:
        with (
            open_store(config) as store,
            Scheduler(config, store, parallelism=2, poll_interval=0.05) as scheduler,
        ):
            scheduler.run(until_idle=True)
    finally:
        restarter.join(timeout=90)
        if not _port_open(port):  # never leave the machine's service down
            start()
            _wait_port(port, up=True)
    assert "started" in outage, "the database was not restarted"

    with open_store(config) as store:
        assert store.runs.get("outage", run_id).state is RunState.SUCCESS
        tis = {ti.task_id: ti for ti in store.tasks.list("outage", run_id)}
    assert (tis["slow"].state, tis["slow"].try_number, tis["slow"].xcom) == (
        TaskState.SUCCESS,
        1,
        "slow",
    )
    assert (tis["after"].state, tis["after"].try_number, tis["after"].xcom) == (
        TaskState.SUCCESS,
        1,
        "slow+after",
    )
    # The next task could only start once the database was back.
    assert tis["after"].started_at.timestamp() > tis["slow"].ended_at.timestamp()
    said = capsys.readouterr().err
    assert "retrying in" in said and "the database is back" in said
    assert said.count("Traceback") == 0


def test_a_scheduler_started_before_its_database_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a crash loop under a service manager: it says so and waits, until stopped."""
    with socket.socket() as placeholder:  # a loopback port nothing listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    clear_isolate_env(monkeypatch)
    monkeypatch.setenv("ISOLATE_HOME", str(tmp_path / "home"))
    assert CliRunner().invoke(isolate, ["init"]).exit_code == 0
    env = {
        **os.environ,
        "ISOLATE_DATABASE_URL": f"postgresql+psycopg://nobody@127.0.0.1:{port}/none",
    }
    exe = Path(sys.executable).parent / "isolate"
    scheduler = subprocess.Popen(
        [exe, "scheduler", "--until-idle"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(2.5)  # 0.5 + 1 s of pauses: a few attempts
        assert scheduler.poll() is None, scheduler.communicate()[1]
        scheduler.send_signal(signal.SIGTERM)
        _, err = scheduler.communicate(timeout=30)
    finally:
        if scheduler.poll() is None:
            scheduler.kill()
    lines = err.splitlines()
    assert len([line for line in lines if "; retrying in" in line]) >= 2
    assert lines[0].startswith("isolate scheduler: cannot connect to database postgresql")
    assert lines[-1].startswith("isolate: error: cannot connect to database")
    assert scheduler.returncode == 6 and "Traceback" not in err
