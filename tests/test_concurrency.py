"""Many writers at once on every backend: authors pushing and triggering from their own
processes while the scheduler runs, and the scheduler never waiting on a row another
transaction holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from filelock import FileLock

from cli.main import isolate
from isolate.config import load_config
from isolate.services.home import open_store
from isolate.services.triggering import trigger
from isolate.states import RunState, TaskState
from isolate.store import tables as t
from localexec.scheduler import Scheduler
from tests.conftest import PYTHON, write_folder
from tests.databases import backend_label
from tests.osusers import clear_isolate_env

EXE = Path(sys.executable).parent / "isolate"
WORKERS, PUSHES, TRIGGERS = 3, 2, 3

DAG = """
    from isolate import DAG, CommandTask

    # worker {worker}, push {push}: each push is a new version
    with DAG("busy"):
        first = CommandTask("first", command="echo $ISOLATE_CTX_RUN_ID first >> {marks}/$ISOLATE_CTX_RUN_ID.first")
        second = CommandTask("second", command="echo $ISOLATE_CTX_RUN_ID second >> {marks}/$ISOLATE_CTX_RUN_ID.second")
        first >> second
"""  # noqa: E501


@pytest.fixture
def node(empty_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A home on each backend; tasks unconfined: they leave marks outside their sandbox."""
    clear_isolate_env(monkeypatch)
    values = {
        "ISOLATE_HOME": str(tmp_path / "home"),
        "ISOLATE_DATABASE_URL": empty_db_url,
        "ISOLATE_OFFLINE": "true",
        "ISOLATE_ENV_PYTHON": PYTHON,
        "ISOLATE_ALLOW_ROOT_TASKS": "true",
        "ISOLATE_LANDLOCK": "off",
        "ISOLATE_BUBBLEWRAP": "off",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    assert CliRunner().invoke(isolate, ["init"]).exit_code == 0
    yield tmp_path


AUTHOR = """
import json, subprocess, sys, time
exe, src, gate, worker, pushes, triggers = sys.argv[1:7]
while not __import__("os").path.exists(gate):
    time.sleep(0.01)
for push in range(int(pushes)):
    folder = f"{src}/w{worker}p{push}"
    subprocess.run([exe, "push", folder], check=True, capture_output=True)
    for _ in range(int(triggers) // int(pushes) + (push == 0) * (int(triggers) % int(pushes))):
        out = subprocess.run([exe, "trigger", "busy", "--json"], check=True, capture_output=True)
        print(json.loads(out.stdout)["run_id"], flush=True)
"""


def test_authors_push_and_trigger_while_the_scheduler_runs(node: Path) -> None:
    marks = node / "marks"
    marks.mkdir()
    src = node / "src"
    for worker in range(WORKERS):
        for push in range(PUSHES):
            text = DAG.format(worker=worker, push=push, marks=marks)
            write_folder(src / f"w{worker}p{push}", {"dag.py": textwrap.dedent(text)})
    # A first version, so that the scheduler has something from the start.
    first = DAG.format(worker="none", push="none", marks=marks)
    write_folder(src / "first", {"dag.py": textwrap.dedent(first)})
    assert CliRunner().invoke(isolate, ["push", str(src / "first")]).exit_code == 0
    gate = node / "go"
    authors = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                AUTHOR,
                str(EXE),
                str(src),
                str(gate),
                str(w),
                str(PUSHES),
                str(TRIGGERS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for w in range(WORKERS)
    ]
    done = threading.Event()
    results: list[tuple[str, str]] = []

    def collect() -> None:
        results.extend(author.communicate(timeout=300) for author in authors)
        done.set()

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    gate.touch()
    config = load_config(None)
    with (
        open_store(config) as store,
        Scheduler(config, store, parallelism=4, poll_interval=0.02) as scheduler,
    ):
        scheduler.run(stop=done.is_set)  # while the authors work
        scheduler.run(until_idle=True)  # then until every run has finished
    collector.join()

    for author, (_out, err) in zip(authors, results, strict=True):
        assert author.returncode == 0, err
    run_ids = [line for out, _ in results for line in out.split()]
    assert len(run_ids) == len(set(run_ids)) == WORKERS * TRIGGERS
    with open_store(config) as store:
        versions = [v.version for v in store.list_versions("busy")]
        # Every push differs from the latest version, whatever their order: a new version.
        assert versions == list(range(1, WORKERS * PUSHES + 2))
        assert len({v.spec_hash for v in store.list_versions("busy")}) == len(versions)
        for run_id in run_ids:
            tis = store.tasks.list("busy", run_id)
            assert store.runs.get("busy", run_id).state is RunState.SUCCESS, [
                (ti.task_id, ti.state, ti.outcome) for ti in tis
            ]
            assert {(ti.task_id, ti.state, ti.try_number) for ti in tis} == {
                ("first", TaskState.SUCCESS, 1),
                ("second", TaskState.SUCCESS, 1),
            }
    # Each task of each run ran exactly once.
    counts = Counter(path.name for path in marks.iterdir() for _ in path.read_text().splitlines())
    assert counts == Counter({f"{r}.{task}": 1 for r in run_ids for task in ("first", "second")})


def test_the_scheduler_skips_a_task_another_transaction_holds(node: Path) -> None:
    config = load_config(None)
    if config.is_default_sqlite or backend_label(config.database_url) == "sqlite":
        pytest.skip("SQLite has no row locks: its writers take turns (BEGIN IMMEDIATE)")
    folder = write_folder(
        node / "src", {"dag.py": textwrap.dedent(DAG.format(worker=0, push=0, marks=node))}
    )
    assert CliRunner().invoke(isolate, ["push", str(folder)]).exit_code == 0
    with open_store(config) as store:
        run = trigger(store, "busy", actor="test")
        store.tasks.transition("busy", run.run_id, "first", TaskState.SCHEDULED)
        ti = t.task_instances.c
        holder = store.engine.connect()
        transaction = holder.begin()
        try:
            holder.execute(
                sa.select(t.task_instances)
                .where(ti.dag_id == "busy", ti.run_id == run.run_id, ti.task_id == "first")
                .with_for_update()
            ).first()
            began = time.monotonic()
            claimed = store.tasks.claim(
                "busy", run.run_id, "first", TaskState.QUEUED, expect=TaskState.SCHEDULED
            )
            assert claimed is None and time.monotonic() - began < 2  # no waiting on the lock
        finally:
            transaction.rollback()
            holder.close()
        claimed = store.tasks.claim(
            "busy", run.run_id, "first", TaskState.QUEUED, expect=TaskState.SCHEDULED
        )
        assert claimed is not None and claimed.state is TaskState.QUEUED
        # A row that changed meanwhile is not claimed either, and nothing is written.
        assert (
            store.tasks.claim(
                "busy", run.run_id, "first", TaskState.QUEUED, expect=TaskState.SCHEDULED
            )
            is None
        )


def test_a_second_scheduler_on_one_home_is_refused(home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """Its start would settle the first one's running attempts as a killed scheduler's."""
    config = load_config(home)
    with FileLock(config.run_dir / "scheduler.lock"):
        refused = cli("scheduler", "--until-idle", expect=1)
    assert refused.stderr == (
        f"isolate: error: another `isolate scheduler` is running on {home}: one per home\n"
    )
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    cli("scheduler", "--until-idle")  # the lock is free again
    # Run in-process, it leaves the caller's signal handlers as it found them.
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
