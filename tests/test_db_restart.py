"""The database restarting under a running scheduler: it waits, reconnects and loses nothing.

Each backend is a private server of the test's own (tests/privatedb.py: a fresh data
directory, a free loopback port), never the machine's own database services. It is stopped
and started again while a task runs: the task's outcome is recorded once the database is
back, the next task starts then, and nothing runs twice.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import isolate
from isolate.config import load_config
from isolate.services.home import open_store
from isolate.services.triggering import trigger
from isolate.states import RunState, TaskState
from localexec.scheduler import Scheduler
from tests.conftest import PYTHON, write_folder
from tests.osusers import clear_isolate_env
from tests.privatedb import PrivateServer, private_mariadb, private_postgres

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

    with DAG("{dag_id}"):
        after(slow())
"""

SERVERS: dict[str, Callable[[], AbstractContextManager[PrivateServer]]] = {
    "postgresql": private_postgres,
    "mysql": private_mariadb,
}


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


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[PrivateServer]:
    """A private database server, killed and removed after the test whatever happens."""
    with SERVERS[request.param]() as private:
        yield private


def test_the_scheduler_outlives_a_database_restart_and_loses_nothing(
    server: PrivateServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The scheduler reports through logging; a daemon's setup (cli.daemonlog) would stop its
    # records from reaching caplog's handler.
    monkeypatch.setattr(logging.getLogger("isolate"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="isolate.scheduler")
    dag_id = f"outage_{server.backend}_{os.getpid()}"
    clear_isolate_env(monkeypatch)
    monkeypatch.setenv("ISOLATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ISOLATE_DATABASE_URL", server.url)
    monkeypatch.setenv("ISOLATE_OFFLINE", "true")
    monkeypatch.setenv("ISOLATE_ENV_PYTHON", PYTHON)
    monkeypatch.setenv("ISOLATE_ALLOW_ROOT_TASKS", "true")
    runner = CliRunner()
    result = runner.invoke(isolate, ["init"])
    assert result.exit_code == 0, result.output
    dag = textwrap.dedent(DAG.format(seconds=3, dag_id=dag_id))
    folder = write_folder(tmp_path / "src", {"dag.py": dag})
    result = runner.invoke(isolate, ["push", str(folder)])
    assert result.exit_code == 0, result.output
    config = load_config(None)
    with open_store(config) as store:
        run_id = trigger(store, dag_id, actor="test").run_id

    outage: dict[str, float] = {}
    failures: list[BaseException] = []

    def restart_while_slow_runs() -> None:
        try:
            with open_store(config) as watcher:
                deadline = time.monotonic() + 60
                while watcher.tasks.get(dag_id, run_id, "slow").state is not TaskState.RUNNING:
                    assert time.monotonic() < deadline, "slow never started"
                    time.sleep(0.05)
            outage["stopped"] = time.monotonic()
            server.stop()
            _wait_port(server.port, up=False)
            time.sleep(5)  # the task ends meanwhile: its outcome must wait for the database
            server.start()
            _wait_port(server.port, up=True)
            outage["started"] = time.monotonic()
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)

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
    assert not failures, failures
    assert "started" in outage, "the database was not restarted"

    with open_store(config) as store:
        assert store.runs.get(dag_id, run_id).state is RunState.SUCCESS
        tis = {ti.task_id: ti for ti in store.tasks.list(dag_id, run_id)}
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
    said = [r.getMessage() for r in caplog.records if r.name == "isolate.scheduler"]
    assert any("retrying in" in message for message in said), said
    assert any(message.startswith("the database is back") for message in said), said
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], said
    assert "Traceback" not in caplog.text


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
    lines: list[str] = []

    def read_stderr() -> None:
        assert scheduler.stderr is not None
        for line in scheduler.stderr:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        # A few attempts (0.5 + 1 s of pauses), however long the command takes to start.
        deadline = time.monotonic() + 60
        while len([line for line in lines if "; retrying in" in line]) < 2:
            assert scheduler.poll() is None, "\n".join(lines)
            assert time.monotonic() < deadline, "\n".join(lines)
            time.sleep(0.1)
        assert scheduler.poll() is None, "\n".join(lines)
        scheduler.send_signal(signal.SIGTERM)
        scheduler.wait(timeout=30)
    finally:
        if scheduler.poll() is None:
            scheduler.kill()
            scheduler.wait()
        reader.join(timeout=30)
    err = "\n".join(lines)
    assert len([line for line in lines if "; retrying in" in line]) >= 2
    assert lines[0].startswith("isolate scheduler: warning: cannot connect to database postgresql")
    assert lines[-1].startswith("isolate: error: cannot connect to database")
    assert scheduler.returncode == 6 and "Traceback" not in err
