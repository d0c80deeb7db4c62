"""Runs in the store: pinned to a version, guarded state transitions, audit, active versions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from isolate.errors import NotFoundError, UsageError
from isolate.states import (
    RunState,
    TaskState,
    TransitionError,
    check_run,
    check_task,
)
from isolate.states import TaskState as S
from isolate.store import NewVersion, Store, content_hash, migrate
from isolate.store.tasks import StaleStateError

WHEN = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(empty_db_url: str) -> Iterator[Store]:
    migrate.upgrade(empty_db_url)
    with Store.open(empty_db_url) as opened:
        yield opened


def push(store: Store, dag_id: str, spec: str) -> int:
    outcome = store.add_version(
        NewVersion(
            dag_id=dag_id,
            spec_hash=content_hash(spec.encode()),
            spec_json=spec,
            bundle_hash=content_hash(b"b"),
            bundle=b"b",
            lock_hash=content_hash(b"l"),
            lock=b"l",
        ),
        pushed_by="alice",
        message=None,
    )
    return outcome.version.version


def test_a_run_is_pinned_to_the_version_it_was_created_with(store: Store) -> None:
    push(store, "etl", "v1")
    run = store.runs.create(
        "etl",
        run_id="manual__1",
        run_type="manual",
        logical_date=WHEN,
        conf={"x": 1},
        created_by="bob",
    )
    assert (run.version, run.state, run.conf, run.logical_date) == (
        1,
        RunState.QUEUED,
        {"x": 1},
        WHEN,
    )
    push(store, "etl", "v2")
    assert store.runs.get("etl", "manual__1").version == 1
    older = store.runs.create(
        "etl",
        run_id="manual__2",
        run_type="manual",
        logical_date=WHEN,
        conf={},
        created_by="bob",
        version=1,
    )
    assert older.version == 1
    latest = store.runs.create(
        "etl",
        run_id="manual__3",
        run_type="scheduled",
        logical_date=WHEN,
        conf={},
        created_by="scheduler",
    )
    assert latest.version == 2
    trigger = store.list_audit(target="etl")[0]
    assert (trigger.action, trigger.actor, trigger.details["run_id"]) == (
        "trigger",
        "scheduler",
        "manual__3",
    )


def test_create_refuses_unknown_dags_versions_and_duplicate_run_ids(store: Store) -> None:
    with pytest.raises(NotFoundError, match="no DAG 'nope'"):
        store.runs.create(
            "nope", run_id="r", run_type="manual", logical_date=WHEN, conf={}, created_by="x"
        )
    push(store, "etl", "v1")
    with pytest.raises(NotFoundError, match="has no version 5"):
        store.runs.create(
            "etl",
            run_id="r",
            run_type="manual",
            logical_date=WHEN,
            conf={},
            created_by="x",
            version=5,
        )
    store.runs.create(
        "etl", run_id="r", run_type="manual", logical_date=WHEN, conf={}, created_by="x"
    )
    with pytest.raises(UsageError, match="already has a run 'r'"):
        store.runs.create(
            "etl", run_id="r", run_type="manual", logical_date=WHEN, conf={}, created_by="x"
        )


def test_states_move_only_along_allowed_transitions(store: Store) -> None:
    push(store, "etl", "v1")
    store.runs.create(
        "etl", run_id="r", run_type="manual", logical_date=WHEN, conf={}, created_by="x"
    )
    with pytest.raises(TransitionError, match="a queued run cannot become success"):
        store.runs.set_state("etl", "r", RunState.SUCCESS)
    running = store.runs.set_state("etl", "r", RunState.RUNNING)
    assert running.started_at is not None and running.ended_at is None
    done = store.runs.set_state("etl", "r", RunState.FAILED)
    assert done.ended_at is not None and done.state is RunState.FAILED
    with pytest.raises(TransitionError):
        store.runs.set_state("etl", "r", RunState.RUNNING)
    again = store.runs.set_state("etl", "r", RunState.QUEUED)  # cleared to run again
    assert again.ended_at is None
    with pytest.raises(NotFoundError):
        store.runs.set_state("etl", "missing", RunState.RUNNING)


def test_active_versions_are_those_of_queued_and_running_runs(store: Store) -> None:
    push(store, "a", "a1")
    push(store, "b", "b1")
    push(store, "b", "b2")
    for dag_id, run_id, version in (("a", "1", 1), ("b", "1", 1), ("b", "2", 2)):
        store.runs.create(
            dag_id,
            run_id=run_id,
            run_type="manual",
            logical_date=WHEN,
            conf={},
            created_by="x",
            version=version,
        )
    store.runs.set_state("b", "1", RunState.RUNNING)
    store.runs.set_state("b", "2", RunState.RUNNING)
    store.runs.set_state("b", "2", RunState.SUCCESS)
    assert store.runs.active_versions() == {("a", 1), ("b", 1)}
    assert [r.run_id for r in store.runs.list("b", states={RunState.RUNNING})] == ["1"]
    assert len(store.runs.list()) == 3


@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [
        (TaskState.NONE, TaskState.SCHEDULED, True),
        (TaskState.SCHEDULED, TaskState.QUEUED, True),
        (TaskState.QUEUED, TaskState.RUNNING, True),
        (TaskState.RUNNING, TaskState.UP_FOR_RETRY, True),
        (TaskState.UP_FOR_RETRY, TaskState.SCHEDULED, True),
        (TaskState.RUNNING, TaskState.SUCCESS, True),
        (TaskState.SUCCESS, TaskState.NONE, True),
        (TaskState.NONE, TaskState.SUCCESS, False),
        (TaskState.SCHEDULED, TaskState.RUNNING, False),
        (TaskState.SUCCESS, TaskState.FAILED, False),
        (TaskState.UP_FOR_RETRY, TaskState.RUNNING, False),
        (TaskState.FAILED, TaskState.RUNNING, False),
    ],
)
def test_task_transitions(old: TaskState, new: TaskState, ok: bool) -> None:
    if ok:
        check_task(old, new)
    else:
        with pytest.raises(TransitionError, match=f"a {old.value} task cannot become {new.value}"):
            check_task(old, new)


def test_every_state_has_a_rule() -> None:
    for state in RunState:
        with pytest.raises(TransitionError):
            check_run(state, state)
    for task_state in TaskState:
        with pytest.raises(TransitionError):
            check_task(task_state, task_state)


def test_a_run_gets_its_task_instances_in_the_same_transaction(store: Store) -> None:
    push(store, "etl", "v1")
    store.runs.create(
        "etl",
        run_id="r",
        run_type="manual",
        logical_date=WHEN,
        conf={},
        created_by="x",
        task_ids=["load", "extract"],
    )
    tasks = store.tasks.list("etl", "r")
    assert [(ti.task_id, ti.state, ti.try_number) for ti in tasks] == [
        ("extract", S.NONE, 0),
        ("load", S.NONE, 0),
    ]


def test_task_transitions_are_guarded_and_carry_attempt_fields(store: Store) -> None:
    push(store, "etl", "v1")
    store.runs.create(
        "etl",
        run_id="r",
        run_type="manual",
        logical_date=WHEN,
        conf={},
        created_by="x",
        task_ids=["a"],
    )
    with pytest.raises(TransitionError, match="a none task cannot become running"):
        store.tasks.transition("etl", "r", "a", S.RUNNING)
    store.tasks.transition("etl", "r", "a", S.SCHEDULED, expect=S.NONE)
    store.tasks.transition("etl", "r", "a", S.QUEUED, try_number=1)
    running = store.tasks.transition(
        "etl",
        "r",
        "a",
        S.RUNNING,
        started_at=WHEN,
        pid=1234,
        pid_started=1.5,
        run_as="svc",
        env_key="e" * 64,
    )
    assert (running.pid, running.run_as, running.try_number) == (1234, "svc", 1)
    done = store.tasks.transition(
        "etl", "r", "a", S.SUCCESS, expect=S.RUNNING, xcom={"rows": [1, 2]}, outcome="exited with 0"
    )
    assert done.xcom == {"rows": [1, 2]} and done.state is S.SUCCESS
    with pytest.raises(StaleStateError, match="is success, not running"):
        store.tasks.transition("etl", "r", "a", S.FAILED, expect=S.RUNNING)
    with pytest.raises(UsageError, match="cannot set"):
        store.tasks.transition("etl", "r", "a", S.NONE, queue="x")
    with pytest.raises(NotFoundError, match="has no task 'b'"):
        store.tasks.get("etl", "r", "b")


def test_many_tasks_move_in_one_guarded_update_and_xcoms_load_on_demand(store: Store) -> None:
    push(store, "etl", "v1")
    ids = [f"t{i:04d}" for i in range(1203)]  # more than one IN (...) batch
    store.runs.create(
        "etl",
        run_id="r",
        run_type="manual",
        logical_date=WHEN,
        conf={},
        created_by="x",
        task_ids=ids,
    )
    # Another writer got to one of them first: it is not moved, and the count says so.
    store.tasks.transition("etl", "r", "t0600", S.SKIPPED, expect=S.NONE)
    moved = store.tasks.move_many("etl", "r", ids, S.UPSTREAM_FAILED, expect=S.NONE, ended_at=WHEN)
    assert moved == len(ids) - 1
    states = {ti.task_id: ti.state for ti in store.tasks.list("etl", "r")}
    assert states.pop("t0600") is S.SKIPPED
    assert set(states.values()) == {S.UPSTREAM_FAILED}
    assert store.tasks.get("etl", "r", "t1202").ended_at == WHEN
    assert store.tasks.move_many("etl", "r", [], S.SKIPPED, expect=S.NONE) == 0
    with pytest.raises(TransitionError, match="cannot become running"):
        store.tasks.move_many("etl", "r", ids, S.RUNNING, expect=S.NONE)
    with pytest.raises(UsageError, match="cannot set"):
        store.tasks.move_many("etl", "r", ids, S.SKIPPED, expect=S.NONE, queue="x")

    # XComs: read only for the tasks asked for, and never by a listing without them.
    store.runs.create(
        "etl",
        run_id="x",
        run_type="manual",
        logical_date=WHEN,
        conf={},
        created_by="x",
        task_ids=["a", "b", "c"],
    )
    for task_id, xcom in (("a", {"n": 1}), ("b", None)):
        store.tasks.transition("etl", "x", task_id, S.SCHEDULED, expect=S.NONE)
        store.tasks.transition("etl", "x", task_id, S.QUEUED, try_number=1)
        store.tasks.transition("etl", "x", task_id, S.RUNNING, started_at=WHEN)
        store.tasks.transition("etl", "x", task_id, S.SUCCESS, xcom=xcom)
    assert store.tasks.xcoms("etl", "x", ["a", "b", "c", "a"]) == {"a": {"n": 1}}
    assert store.tasks.xcoms("etl", "x", []) == {}
    light = {ti.task_id: ti for ti in store.tasks.list("etl", "x", xcoms=False)}
    assert light["a"].xcom is None and light["a"].state is S.SUCCESS
    assert store.tasks.get("etl", "x", "a").xcom == {"n": 1}


def test_last_logical_date_per_run_type(store: Store) -> None:
    push(store, "etl", "v1")
    assert store.runs.last_logical_date("etl", "scheduled") is None
    for day in (3, 1, 2):
        store.runs.create(
            "etl",
            run_id=f"s{day}",
            run_type="scheduled",
            conf={},
            created_by="x",
            logical_date=datetime(2024, 1, day, tzinfo=UTC),
        )
    store.runs.create(
        "etl",
        run_id="m",
        run_type="manual",
        conf={},
        created_by="x",
        logical_date=datetime(2025, 1, 1, tzinfo=UTC),
    )
    assert store.runs.last_logical_date("etl", "scheduled") == datetime(2024, 1, 3, tzinfo=UTC)
