"""Faults confined to one run or attempt: the loop logs them for the admin and goes on.

Each test injects a fault (an error raised where the scheduler plans, launches or records
one DAG's work, or a concurrent writer racing it) while another DAG is due, and shows that
DAG finishing and the scheduler still running.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from isolate.config import load_config
from isolate.health import STALE_AFTER, assess, health_path, read_health
from isolate.services.clearing import clear_tasks
from isolate.services.home import open_store
from isolate.services.triggering import trigger
from isolate.states import RunState, TaskState
from isolate.store import Store, tables
from localexec import scheduler as scheduler_module
from localexec.scheduler import Scheduler

DAGS = """
    from isolate import DAG, task

    @task
    def work():
        return 1

    @task(retries=1, retry_delay=3600)
    def flaky():
        raise RuntimeError("fails once, retried in an hour")

    with DAG("victim") as victim:
        work()

    with DAG("other") as other:
        work()

    with DAG("retrying") as retrying:
        flaky()
"""

pytestmark = pytest.mark.usefixtures("unconfined")
DONE = (RunState.SUCCESS, RunState.FAILED)


@pytest.fixture
def node(cli, home: Path, make_folder) -> Callable[..., dict[str, str]]:
    cli("push", str(make_folder({"dag.py": DAGS})))

    def trigger(*dag_ids: str) -> dict[str, str]:
        return {
            dag_id: json.loads(cli("trigger", dag_id, "--json").stdout)["run_id"]
            for dag_id in dag_ids
        }

    return trigger


def _scheduler(home: Path, store: Store) -> Scheduler:
    return Scheduler(load_config(home), store, parallelism=2, poll_interval=0.05)


def _run_for(scheduler: Scheduler, passes: int) -> None:
    count = iter(range(passes))
    scheduler.run(stop=lambda: next(count, None) is None)


def _run_until(scheduler: Scheduler, done: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    scheduler.run(stop=lambda: done() or time.monotonic() > deadline)
    assert done(), "not done in time"


def _state(store: Store, dag_id: str, run_id: str) -> RunState:
    return store.runs.get(dag_id, run_id).state


def test_an_error_planning_one_run_is_logged_and_the_others_run(
    home: Path, node, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    runs = node("victim", "other")
    real = scheduler_module.plan_run

    def faulty(spec: Any, *args: Any) -> Any:
        if spec.dag_id == "victim":
            raise KeyError("injected planning fault")
        return real(spec, *args)

    monkeypatch.setattr(scheduler_module, "plan_run", faulty)
    with open_store(load_config(home)) as store, _scheduler(home, store) as scheduler:
        _run_until(scheduler, lambda: _state(store, "other", runs["other"]) is RunState.SUCCESS)
        assert _state(store, "victim", runs["victim"]) is RunState.RUNNING
        faults = [r for r in caplog.records if "contained a fault" in r.getMessage()]
        assert faults and all(r.levelno == logging.ERROR for r in faults)
        assert "planning a run (victim" in faults[0].getMessage()
        assert faults[0].exc_info is not None  # the traceback, for the admin
        # Once the fault is gone, the same scheduler finishes the run.
        monkeypatch.setattr(scheduler_module, "plan_run", real)
        _run_until(scheduler, lambda: _state(store, "victim", runs["victim"]) in DONE)
        assert _state(store, "victim", runs["victim"]) is RunState.SUCCESS
    # The admin sees it in the scheduler's health file too (written at its stop).
    health = read_health(load_config(home))
    assert health is not None and health["stopped_at"] is not None
    assert health["contained_faults"] >= 1 and health["database"] == "ok"
    assert health["last_fault"] == "planning a run (victim " + runs["victim"] + "): KeyError"


def test_the_heartbeat_says_whether_the_loop_is_alive(cli, home: Path, node) -> None:
    runs = node("other")
    config = load_config(home)
    with open_store(config) as store, _scheduler(home, store) as scheduler:
        _run_until(scheduler, lambda: _state(store, "other", runs["other"]) is RunState.SUCCESS)
        health = read_health(config)
        assert health is not None and health["passes"] >= 1 and "stopped_at" not in health
        assert health_path(config).stat().st_mode & 0o777 == 0o644
        now = health["heartbeat_at"]
        status, detail = assess(health, now=now + 1)
        assert status == "ok" and f"pid {os.getpid()}" in detail
        status, detail = assess(health, now=now + STALE_AFTER + 1)
        assert status == "fail" and "stuck" in detail
        down = {**health, "database": "unreachable: cannot connect"}
        assert assess(down, now=now)[0] == "fail"
        dead_push = {**health, "push_server": {"alive": False}}
        assert "push server is not accepting" in assess(dead_push, now=now)[1]
        # A scheduler killed without stopping: its pid is gone.
        assert assess({**health, "pid": 2**22 + 7}, now=now)[0] == "fail"
        doctor = json.loads(cli("doctor", "--json", expect=None).stdout)
        (finding,) = [f for f in doctor if f["check"] == "scheduler"]
        assert finding["status"] == "ok", finding
    stopped = read_health(config)
    assert stopped is not None and stopped["stopped_at"] is not None
    assert "stopped" in assess(stopped, now=now)[1]
    assert assess(None, now=now)[1].startswith("no scheduler has run")


def test_an_error_preparing_one_attempt_fails_that_attempt_only(
    home: Path, node, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    runs = node("victim", "other")
    real = Scheduler.prepare

    def faulty(self: Scheduler, run: Any, *args: Any) -> Any:
        if run.dag_id == "victim":
            raise ZeroDivisionError("injected launch fault")
        return real(self, run, *args)

    monkeypatch.setattr(Scheduler, "prepare", faulty)
    with open_store(load_config(home)) as store, _scheduler(home, store) as scheduler:
        _run_until(scheduler, lambda: _state(store, "victim", runs["victim"]) in DONE)
        assert _state(store, "other", runs["other"]) is RunState.SUCCESS
        assert _state(store, "victim", runs["victim"]) is RunState.FAILED
        ti = store.tasks.get("victim", runs["victim"], "work")
        assert ti.outcome is not None and "internal error (ZeroDivisionError" in ti.outcome
    said = [
        r.getMessage() for r in caplog.records if "preparing an attempt (victim" in r.getMessage()
    ]
    assert said and " try 1)" in said[0]


def test_an_error_recording_one_outcome_is_contained(
    home: Path, node, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    runs = node("victim", "other")
    real = Scheduler._record_one

    def faulty(self: Scheduler, item: Any, started: Any) -> None:
        if item.key[0] == "victim":
            raise TypeError("injected recording fault")
        real(self, item, started)

    monkeypatch.setattr(Scheduler, "_record_one", faulty)
    with open_store(load_config(home)) as store, _scheduler(home, store) as scheduler:
        _run_until(scheduler, lambda: _state(store, "other", runs["other"]) is RunState.SUCCESS)
        _run_for(scheduler, 20)
        # Its outcome was lost to the fault: the task stays running until an admin acts
        # (or the next scheduler's start settles it); the loop did not stop.
        assert store.tasks.get("victim", runs["victim"], "work").state is TaskState.RUNNING
    assert any("recording an outcome (victim" in r.getMessage() for r in caplog.records)


def test_clearing_a_task_waiting_for_its_retry_races_the_loop_harmlessly(
    home: Path, node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`isolate tasks clear` of an up_for_retry task between the scheduler's read and its
    write: the clear stands (the guarded update moves nothing) and the loop goes on."""
    runs = node("retrying", "other")
    run_id = runs["retrying"]
    with open_store(load_config(home)) as store, _scheduler(home, store) as scheduler:
        flaky_state = lambda: store.tasks.get("retrying", run_id, "flaky").state  # noqa: E731
        # "flaky" fails its first try and waits an hour for its retry.
        _run_until(scheduler, lambda: flaky_state() is TaskState.UP_FOR_RETRY)
        ti = tables.task_instances.c
        with store.engine.begin() as conn:  # its retry is due now
            conn.execute(
                tables.task_instances.update()
                .where(ti.dag_id == "retrying", ti.task_id == "flaky")
                .values(next_try_at=None)
            )
        real = store.tasks.move_many
        raced = []

        def racing(dag_id: str, rid: str, task_ids: Any, state: TaskState, **kw: Any) -> Any:
            wanted = list(task_ids)
            if "flaky" in wanted and kw.get("expect") is TaskState.UP_FOR_RETRY and not raced:
                raced.append(True)  # the author's clear lands first
                clear_tasks(
                    store, store.runs.get(dag_id, rid), "flaky", downstream=False, actor="t"
                )
            return real(dag_id, rid, wanted, state, **kw)

        monkeypatch.setattr(store.tasks, "move_many", racing)
        more = node("other")
        _run_until(
            scheduler,
            lambda: (
                flaky_state() is TaskState.FAILED
                and _state(store, "other", more["other"]) is RunState.SUCCESS
            ),
        )
        assert raced
        assert _state(store, "other", more["other"]) is RunState.SUCCESS
        flaky = store.tasks.get("retrying", run_id, "flaky")
        # Planned again from the cleared state: it ran its next try (and failed again).
        assert flaky.try_number == 2 and flaky.state is TaskState.FAILED


def test_a_pass_plans_a_bounded_number_of_runs_however_many_are_active(
    home: Path, cli, make_folder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tenant keeping hundreds of runs active (their tasks waiting for slots) costs each
    pass what it changed plus SWEEP_PER_PASS runs in turn, not a plan of every run."""
    dag = (
        'from isolate import DAG, CommandTask\nwith DAG("crowd", max_active_runs=200):\n'
        '    CommandTask("t", command="sleep 3")\n'
    )
    cli("push", str(make_folder({"dag.py": dag})))
    config = load_config(home)
    with open_store(config) as store:
        for _ in range(120):
            trigger(store, "crowd", actor="t")
        planned: list[str] = []
        real = Scheduler.advance

        def counting(self: Scheduler, run: Any, spec: Any, now: Any) -> Any:
            planned.append(run.run_id)
            return real(self, run, spec, now)

        monkeypatch.setattr(Scheduler, "advance", counting)
        with Scheduler(config, store, parallelism=1, poll_interval=0.05) as scheduler:
            scheduler.tick()  # every run is new: each is planned once
            assert len(planned) == 120
            seen: set[str] = set()
            for _ in range(5):
                planned.clear()
                scheduler.tick()
                assert len(planned) <= scheduler_module.SWEEP_PER_PASS + 1
                seen.update(planned)
            assert len(seen) == 120  # in turn: every run within four passes
            store.set_paused("crowd", True, actor="t")
            scheduler.run(until_idle=True)  # the one running try ends
