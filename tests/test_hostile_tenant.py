"""Tenant A attacks the node's scheduling while tenant B's DAG runs: B finishes, undisturbed.

A does at once what froze or starved the node before: a catchup backlog of years of daily
runs, a callback that sleeps, a 2,500-task chain whose root fails, an active run holding
megabytes of XComs, a result nested 990 deep, a log flood, a template that asks for 3 GB,
and a bundle with a module that is slow to compile. B's three-task chain must finish
while A's callback still sleeps (a loop that waited for it, or for anything else of A's,
could not), and each of A's attacks must end in a clear, contained outcome.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli.main import isolate
from isolate.config import load_config
from isolate.health import read_health
from isolate.services.home import open_store
from isolate.states import RunState, TaskState
from localexec.scheduler import Scheduler
from tests.conftest import PYTHON, write_folder
from tests.hostile import A_TRIGGERED, SLOW_MODULE, VICTIM, attacks, mapping
from tests.osusers import clear_isolate_env, os_users, unique

A, B = unique("isoht-a"), unique("isoht-b")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="tenants' users are made by root")


@pytest.fixture(scope="module")
def users() -> Iterator[dict[str, pwd.struct_passwd]]:
    with os_users(A, B) as made:
        yield made


@pytest.fixture
def node(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="isolate-hostile-"))
    os.chmod(base, 0o711)
    (base / "etc").mkdir(mode=0o755)
    mapping_file = base / "etc" / "tenants.toml"
    mapping_file.write_text(mapping(A, B))
    os.chmod(mapping_file, 0o600)
    clear_isolate_env(monkeypatch)
    monkeypatch.setenv("ISOLATE_HOME", str(base / "home"))
    monkeypatch.setenv("ISOLATE_OFFLINE", "true")
    monkeypatch.setenv("ISOLATE_ENV_PYTHON", PYTHON)
    monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(mapping_file))
    monkeypatch.setenv("ISOLATE_MAX_LOG_BYTES", "1M")
    monkeypatch.setenv("ISOLATE_MAX_CATCHUP_RUNS", "1000")
    assert CliRunner().invoke(isolate, ["init"]).exit_code == 0
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def cli(*args: str) -> Any:
    result = CliRunner().invoke(isolate, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_tenant_b_finishes_while_tenant_a_attacks_the_scheduler(
    node: Path, users: dict[str, pwd.struct_passwd]
) -> None:
    folder = write_folder(node / "src" / "a", {"dag.py": attacks()})
    (folder / "slow_module.py").write_text(SLOW_MODULE)
    cli("push", str(folder))
    a_runs = {dag_id: cli("trigger", dag_id)["run_id"] for dag_id in A_TRIGGERED}
    cli("push", str(write_folder(node / "src" / "b", {"dag.py": VICTIM})))
    config = load_config(None)
    with (
        open_store(config) as store,
        Scheduler(config, store, parallelism=4, poll_interval=0.05) as scheduler,
    ):
        callback_log = (
            node / "home" / "logs" / "a.callback" / a_runs["a.callback"] / "done"
        ) / "1.on_success.log"
        # A's attacks are under way (its callback sleeps) when B's run is triggered.
        deadline = time.monotonic() + 120
        scheduler.run(stop=lambda: callback_log.exists() or time.monotonic() > deadline)
        assert callback_log.exists(), "A's callback never started"
        b_run = cli("trigger", "b.victim")["run_id"]
        began = time.monotonic()

        def b_done() -> bool:
            return store.runs.get("b.victim", b_run).state not in (
                RunState.QUEUED,
                RunState.RUNNING,
            )

        scheduler.run(stop=lambda: b_done() or time.monotonic() > deadline)
        b_took = time.monotonic() - began
        # A's callback sleeps 20 s: B finished before it woke.
        assert "--- isolate outcome" not in callback_log.read_text(), b_took
        assert store.runs.get("b.victim", b_run).state is RunState.SUCCESS, b_took
        victim = {ti.task_id: ti for ti in store.tasks.list("b.victim", b_run)}
        assert victim["two"].xcom == "undisturbed" and victim["two"].run_as == B

        # Now let A's attacks end: its backlog stops (a pause), the rest settles.
        assert CliRunner().invoke(isolate, ["dags", "pause", "a.backlog"]).exit_code == 0
        scheduler.run(until_idle=True)
        backlog = store.runs.list(dag_id="a.backlog")
        states = {
            dag_id: {ti.task_id: ti for ti in store.tasks.list(dag_id, run_id)}
            for dag_id, run_id in a_runs.items()
        }
    # The catchup was capped and created as its runs finished, never all at once.
    assert 0 < len(backlog) <= 1000
    chain = states["a.chain"]
    assert chain["t0000"].state is TaskState.FAILED
    assert {ti.state for i, ti in chain.items() if i != "t0000"} == {TaskState.UPSTREAM_FAILED}
    assert {ti.state for ti in states["a.xcoms"].values()} == {TaskState.SUCCESS}
    forged = states["a.forged"]["deep"]
    assert forged.state is TaskState.FAILED and "nested deeper than" in (forged.outcome or "")
    assert states["a.flood"]["flood"].state is TaskState.SUCCESS
    flood_log = node / "home" / "logs" / "a.flood" / a_runs["a.flood"] / "flood" / "1.log"
    assert flood_log.stat().st_size < 1_100_000 and "bytes of output dropped" in (
        flood_log.read_text()
    )
    bomb = states["a.template"]["bomb"]
    assert bomb.state is TaskState.FAILED and "template" in (bomb.outcome or "")
    assert "--- isolate outcome: success" in callback_log.read_text()
    # The loop contained no fault: every attack ended as an outcome of A's own attempts.
    health = read_health(config)
    assert health is not None and health["contained_faults"] == 0, health["last_fault"]
